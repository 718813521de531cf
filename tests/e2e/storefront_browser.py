"""The storefront in a real browser: headless Chromium driven by WebDriver.

Run by tests/e2e/storefront.rs against a running `mesh up`:
    storefront_browser.py URL SCREENSHOT
A whole purchase as a visitor makes it: browse, open a product, register
(and see the API's refusal of a second account with the same email), log in
(after a wrong password is refused), filter to books, add two products (one
from its card, one from its page with a quantity), add a third and remove it
from the cart, check out (while another tab on a product's page sees its
stock drop live), find the order among the orders, log out, and see
a forged token refused (and the session ended). What the page
shows is checked at each step: the cart's total is the sum of the prices the
catalog showed, the order's total equals it, the cart is empty afterwards.
SCREENSHOT gets the cart before checkout (the README's picture).
"""

import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

url, screenshot = sys.argv[1:3]


def browser(profile):
    options = webdriver.ChromeOptions()
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 "--window-size=1100,560", "--lang=en-US"]:
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def step(text):
    print(f"storefront: {text}", flush=True)


with tempfile.TemporaryDirectory() as profile:
    driver = browser(profile)

    def wait(what, check, seconds=20):
        """Waits for check(driver) to be truthy; fails with the page's messages otherwise."""
        try:
            return WebDriverWait(driver, seconds, poll_frequency=0.1).until(lambda d: check(d))
        except Exception as e:
            shown = [f"{i}: {driver.find_element(By.ID, i).text!r}" for i in ("notice", "error")]
            raise SystemExit(f"not within {seconds} s: {what}\n{'; '.join(shown)}\n"
                             f"{driver.page_source[:3000]}") from e

    def find(css):
        return driver.find_elements(By.CSS_SELECTOR, css)

    def shown(element_id):
        element = driver.find_element(By.ID, element_id)
        return element if element.is_displayed() else None

    def error_says(words):
        return lambda d: (lambda e: e.is_displayed() and words in e.text)(d.find_element(By.ID, "error"))

    def minor(element):
        return int(element.get_attribute("data-amount-minor"))

    def fill(element_id, text):
        field = driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(text)

    try:
        driver.get(url)
        categories = wait("the category filter filled from the catalog",
                          lambda d: (lambda o: o if "books" in o else None)(
                              [o.get_attribute("value") for o in Select(d.find_element(By.ID, "category")).options]))
        cards = wait("the catalog's first page", lambda d: find('#products[data-category=""] li[data-product]'))
        assert len({c.get_attribute("data-category") for c in cards}) > 1, "the first page shows one category only"
        # The next page (pageToken) adds to the list.
        driver.find_element(By.ID, "more").click()
        more = wait("a second page of products", lambda d: (lambda c: c if len(c) > len(cards) else None)(
            find('#products li[data-product]')))
        ids = [c.get_attribute("data-product") for c in more]
        assert len(ids) == len(set(ids)) and ids == sorted(ids), f"pages overlap or are out of order: {ids}"
        step(f"catalog shows {len(cards)} products, {len(more)} after 'More'; categories {categories[1:]}")

        # A product's own page.
        cards = more
        first_name = cards[0].find_element(By.CSS_SELECTOR, "a.product-link").text
        cards[0].find_element(By.CSS_SELECTOR, "a.product-link").click()
        wait("the product page", lambda d: shown("product") and find('[data-testid="product-name"]')
             and find('[data-testid="product-name"]')[0].text == first_name)
        step(f"product page of {first_name!r}")

        # Register, and see the API refuse the same email again.
        stamp = int(time.time() * 1000)
        email, password, name = f"grace+{stamp}@example.com", "correct horse battery", "Grace Hopper"
        driver.find_element(By.ID, "nav-account").click()
        wait("the account page", lambda d: shown("register-form"))
        for attempt in range(2):
            fill("register-name", name)
            fill("register-email", email)
            fill("register-password", password)
            driver.find_element(By.ID, "register").click()
            if attempt == 0:
                wait("the welcome after registering", lambda d: shown("notice") and "Welcome" in d.find_element(By.ID, "notice").text)
                assert driver.find_element(By.ID, "login-email").get_attribute("value") == email
        wait("the refusal of a second account", error_says("already exists"))
        assert driver.find_element(By.ID, "error").get_attribute("data-status") == "409"
        step(f"registered {email}; a second registration shows {driver.find_element(By.ID, 'error').text!r}")

        # Log in, after a wrong password is refused.
        fill("login-email", email)
        fill("login-password", "not the password")
        driver.find_element(By.ID, "login").click()
        wait("the refusal of a wrong password", error_says("wrong email or password"))
        fill("login-password", password)
        driver.find_element(By.ID, "login").click()
        wait("logged in", lambda d: shown("whoami") and name in d.find_element(By.ID, "whoami").text
             and shown("view-catalog") and not shown("error"))
        step(f"logged in: {driver.find_element(By.ID, 'whoami').text!r}")

        # Books only.
        Select(driver.find_element(By.ID, "category")).select_by_value("books")
        books = wait("the books", lambda d: find('#products[data-category="books"] li[data-product]'))
        assert all(b.get_attribute("data-category") == "books" for b in books), "a non-book among the books"
        assert len(books) >= 3, f"{len(books)} books"
        picked = [(b.get_attribute("data-product"), minor(b.find_element(By.CSS_SELECTOR, '[data-testid="price"]')))
                  for b in books[:3]]
        step(f"filtered to {len(books)} books; buying {picked[0][0]} and 2 × {picked[1][0]}, not {picked[2][0]}")

        def cart_count(n):
            return lambda d: d.find_element(By.ID, "cart-count").text == str(n) and not shown("error")

        # The first from its card, the third too (to be removed later).
        books[0].find_element(By.CSS_SELECTOR, '[data-testid="add-to-cart"]').click()
        wait("1 unit in the cart", cart_count(1))
        books[2].find_element(By.CSS_SELECTOR, '[data-testid="add-to-cart"]').click()
        wait("2 units in the cart", cart_count(2))
        # The second from its page, two units.
        books[1].find_element(By.CSS_SELECTOR, "a.product-link").click()
        wait("the second product's page",
             lambda d: d.find_element(By.ID, "product").get_attribute("data-product") == picked[1][0] and shown("quantity"))
        fill("quantity", "2")
        driver.find_element(By.CSS_SELECTOR, '#product [data-testid="add-to-cart"]').click()
        wait("4 units in the cart", cart_count(4))

        # The cart: remove the third, check the sum.
        driver.find_element(By.ID, "nav-cart").click()
        wait("three lines in the cart", lambda d: len(find('#cart-items tr[data-product]')) == 3)
        driver.find_element(By.CSS_SELECTOR, f'#cart-items tr[data-product="{picked[2][0]}"] [data-testid="remove"]').click()
        rows = wait("two lines after removing one", lambda d: (lambda r: r if len(r) == 2 else None)(find('#cart-items tr[data-product]')))
        quantities = {r.get_attribute("data-product"): r.find_element(By.CSS_SELECTOR, '[data-testid="quantity"]').text for r in rows}
        assert quantities == {picked[0][0]: "1", picked[1][0]: "2"}, quantities
        expected = picked[0][1] + 2 * picked[1][1]
        shown_total = driver.find_element(By.CSS_SELECTOR, '[data-testid="cart-total-amount"]')
        assert minor(shown_total) == expected, f"cart total {minor(shown_total)} != {expected}"
        assert driver.find_element(By.ID, "cart-count").text == "3"
        step(f"cart: {quantities}, total {shown_total.text}")
        driver.save_screenshot(screenshot)

        # Another tab on the second product's page follows its stock live (Server-Sent Events).
        shop_tab = driver.current_window_handle
        driver.switch_to.new_window("tab")
        watch_tab = driver.current_window_handle
        driver.get(f"{url}#/product/{picked[1][0]}")
        # Read in the page: the stream's records redraw the element.
        stock_before = int(wait("the product page live (its stream's first record)", lambda d: d.execute_script(
            f'return document.querySelector(\'#product[data-product="{picked[1][0]}"][data-live] [data-testid="stock"]\')'
            '?.dataset.stock')))
        driver.switch_to.window(shop_tab)

        # Check out.
        driver.find_element(By.ID, "checkout").click()
        wait("the order's confirmation", lambda d: shown("order-confirmation"))
        order_id = driver.find_element(By.ID, "order-confirmation").get_attribute("data-order")
        order_total = driver.find_element(By.CSS_SELECTOR, '#order-confirmation [data-testid="order-total"]')
        assert order_id, "no order id on the confirmation"
        assert minor(order_total) == expected, f"order total {minor(order_total)} != {expected}"
        wait("the cart empty after checkout", lambda d: shown("cart-empty") and not shown("cart") and cart_count(0)(d))
        step(f"checked out: order {order_id} for {order_total.text}; the cart is empty")

        driver.switch_to.window(watch_tab)
        wait("the other tab's stock to drop by the 2 units sold", lambda d: find(
            f'#product [data-testid="stock"][data-stock="{stock_before - 2}"]'))
        step(f"the product page in another tab went from {stock_before} to {stock_before - 2} in stock, live")
        driver.close()
        driver.switch_to.window(shop_tab)

        # The orders.
        driver.find_element(By.ID, "nav-orders").click()
        order = wait("the order among the orders", lambda d: find(f'#orders li[data-order="{order_id}"]'))[0]
        assert minor(order.find_element(By.CSS_SELECTOR, '[data-testid="order-total"]')) == expected
        assert order.get_attribute("data-status") == "ORDER_STATUS_PAID", order.get_attribute("data-status")
        lines = {li.get_attribute("data-product"): li.text for li in order.find_elements(By.CSS_SELECTOR, "ul li")}
        assert set(lines) == {picked[0][0], picked[1][0]}, lines
        assert lines[picked[1][0]].startswith("2 × "), lines
        step(f"orders list shows {order_id}: {order.text!r}")

        # The session survives a reload (sessionStorage), and ends on logging out.
        driver.refresh()
        wait("still logged in after a reload", lambda d: shown("whoami") and find(f'#orders li[data-order="{order_id}"]'))
        driver.find_element(By.ID, "logout").click()
        wait("logged out", lambda d: not shown("whoami") and shown("nav-account"))
        driver.find_element(By.ID, "nav-orders").click()
        wait("orders need a session again", lambda d: shown("login-form") and "Log in" in d.find_element(By.ID, "notice").text)

        # A token the gateway refuses (401) is shown, and ends the session.
        fill("login-email", email)
        fill("login-password", password)
        driver.find_element(By.ID, "login").click()
        wait("logged in again", lambda d: shown("whoami") and shown("view-catalog"))
        driver.execute_script("""
            const session = JSON.parse(sessionStorage.getItem("meshwork.session"));
            session.token = session.token.slice(0, -8) + "AAAAAAAA";
            sessionStorage.setItem("meshwork.session", JSON.stringify(session));""")
        driver.find_element(By.ID, "nav-cart").click()
        wait("the refused token", lambda d: shown("error") and d.find_element(By.ID, "error").get_attribute("data-status") == "401")
        wait("the session ended by the refusal", lambda d: not shown("whoami") and shown("nav-account"))
        step(f"a forged token: {driver.find_element(By.ID, 'error').text!r}")
        step("purchase complete: registered, logged in, filtered, filled and emptied the cart, checked out, saw the order")
    finally:
        driver.quit()
