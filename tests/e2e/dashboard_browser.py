"""The dashboard in a real browser: headless Chromium driven by WebDriver.

Run by tests/e2e/dashboard.rs against a running `mesh up --demo`:
    dashboard_browser.py URL CHECKOUT_TRACE_ID MESH_TOML MESH_BINARY SCREENSHOT
It checks that every workload shows as ready, that the checkout's trace is
drawn as a waterfall with all its spans under their parents, and that the
demo -> users edge turns red once mesh.toml injects a fault and the demo runs
again. It saves a screenshot of the overview (the README's picture).
"""

import subprocess
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

url, checkout, config, mesh, screenshot = sys.argv[1:6]
# The shop: four apps, four sidecars, and the sidecars of the demo client and the gateway.
WORKLOADS = 10
SPANS = 15


def browser(profile):
    options = webdriver.ChromeOptions()
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 "--window-size=1400,1150"]:
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait(driver, what, check, seconds=30):
    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.2).until(lambda d: check(d))
    except Exception as e:
        raise SystemExit(f"not within {seconds} s: {what}\n{driver.page_source[:3000]}") from e


with tempfile.TemporaryDirectory() as profile:
    driver = browser(profile)
    try:
        driver.get(url)

        def all_ready(d):
            rows = d.find_elements(By.CSS_SELECTOR, "#workloads tr[data-workload]")
            return len(rows) == WORKLOADS and all(r.get_attribute("data-ready") == "true" for r in rows)
        wait(driver, f"{WORKLOADS} workloads, all ready", all_ready)
        wait(driver, "the graph's edges", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#graph g.edge")) >= 4)
        driver.save_screenshot(screenshot)

        driver.get(url + "#traces/" + checkout)
        rows = wait(driver, f"the checkout's waterfall with {SPANS} spans",
                    lambda d: (lambda r: r if len(r) == SPANS else False)(
                        d.find_elements(By.CSS_SELECTOR, f'.waterfall[data-trace="{checkout}"] .span-row')))
        ids = {r.get_attribute("data-span") for r in rows}
        roots = [r for r in rows if r.get_attribute("data-parent") not in ids]
        assert len(roots) == 1, f"{len(roots)} spans without a parent in the trace"
        assert "CartService/Checkout" in roots[0].text, roots[0].text

        # A fault on users: every call to it fails, and the demo's first call is to users.
        with open(config, "a") as f:
            f.write('\n[[services.users.faults]]\nabort = { percent = 100, status = "UNAVAILABLE" }\n')
        driver.get(url)
        red = 'g.edge.failing[data-from="demo"][data-to="users"]'
        deadline = time.time() + 60
        while not driver.find_elements(By.CSS_SELECTOR, red):
            if time.time() > deadline:
                raise SystemExit("the demo -> users edge never turned red\n" + driver.page_source[:3000])
            subprocess.run([mesh, "demo", "--config", config], capture_output=True, timeout=30)
            # The page redraws every 2 s: give it a scrape's time to show the failures.
            try:
                WebDriverWait(driver, 3, poll_frequency=0.2).until(
                    lambda d: d.find_elements(By.CSS_SELECTOR, red))
            except Exception:
                pass
        print("dashboard: workloads ready, checkout drawn, demo -> users red after the fault")
    finally:
        driver.quit()
