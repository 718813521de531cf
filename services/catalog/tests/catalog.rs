//! The catalog over a real loopback socket: paging, lookups, updates and the watch
//! stream, plus the statuses for wrong input.

use std::time::Duration;

use meshwork_proto::{
    catalog::{
        BatchGetProductsRequest, GetProductRequest, ListProductsRequest, Product, UpdateProductRequest,
        WatchProductsRequest, catalog_service_client::CatalogServiceClient,
    },
    common::Money,
};
use meshwork_service_kit::testing::TestServer;
use tonic::{Code, transport::Channel};

const SEEDED: usize = 36;

async fn start(dir: &std::path::Path) -> (CatalogServiceClient<Channel>, TestServer) {
    let service = meshwork_catalog::service(dir).await.expect("service");
    let server = TestServer::start(tonic::service::Routes::new(service), &[meshwork_catalog::GRPC_SERVICE])
        .await
        .expect("server");
    (CatalogServiceClient::new(server.channel()), server)
}

async fn list_all(client: &mut CatalogServiceClient<Channel>, page_size: i32, category: &str) -> Vec<Product> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    for _ in 0..100 {
        let page = client
            .list_products(ListProductsRequest {
                page_size,
                page_token,
                category: category.into(),
            })
            .await
            .expect("list")
            .into_inner();
        assert!(page.products.len() <= page_size.max(1) as usize);
        all.extend(page.products);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
    panic!("paging never ended");
}

fn update(id: &str, price: Option<i64>, stock: Option<i32>) -> UpdateProductRequest {
    UpdateProductRequest {
        product_id: id.into(),
        price: price.map(|amount_minor| Money {
            amount_minor,
            currency_code: "USD".into(),
        }),
        stock,
    }
}

#[tokio::test]
async fn pages_through_the_whole_catalog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut client, _server) = start(dir.path()).await;

    let all = list_all(&mut client, 7, "").await;
    assert_eq!(all.len(), SEEDED);
    let ids: Vec<&str> = all.iter().map(|p| p.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "ordered by id, no repeats");
    assert!(all.iter().all(|p| {
        p.price
            .as_ref()
            .is_some_and(|m| m.currency_code == "USD" && m.amount_minor > 0)
    }));
    let categories: std::collections::BTreeSet<&str> = all.iter().map(|p| p.category.as_str()).collect();
    assert!(categories.len() >= 4, "{categories:?}");

    let first = client
        .list_products(ListProductsRequest::default())
        .await
        .expect("default page")
        .into_inner();
    assert_eq!(first.products.len(), 20);
    let big = client
        .list_products(ListProductsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("capped page")
        .into_inner();
    assert_eq!(big.products.len(), SEEDED);
    assert!(big.next_page_token.is_empty());

    let books = list_all(&mut client, 2, "books").await;
    assert!(!books.is_empty());
    assert!(books.iter().all(|p| p.category == "books"));
    assert!(list_all(&mut client, 5, "no-such-category").await.is_empty());

    let err = client
        .list_products(ListProductsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .expect_err("negative page size");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .list_products(ListProductsRequest {
            page_token: "garbage".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn gets_and_batch_gets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut client, _server) = start(dir.path()).await;

    let p = client
        .get_product(GetProductRequest {
            product_id: "book-ddia".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(p.name, "Designing Data-Intensive Applications");
    let err = client
        .get_product(GetProductRequest {
            product_id: "nope".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "unknown product 'nope'");

    let ids = ["toys-kite", "book-ddia", "elec-mouse", "book-ddia"];
    let got = client
        .batch_get_products(BatchGetProductsRequest {
            product_ids: ids.iter().map(|s| s.to_string()).collect(),
        })
        .await
        .expect("batch")
        .into_inner()
        .products;
    assert_eq!(got.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ids, "order kept");

    let err = client
        .batch_get_products(BatchGetProductsRequest {
            product_ids: vec!["book-ddia".into(), "ghost-1".into(), "ghost-2".into()],
        })
        .await
        .expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("ghost-1"), "{}", err.message());
    let err = client
        .batch_get_products(BatchGetProductsRequest::default())
        .await
        .expect_err("empty");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .batch_get_products(BatchGetProductsRequest {
            product_ids: vec!["book-ddia".into(); 101],
        })
        .await
        .expect_err("too many");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn updates_persist_and_the_seed_runs_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut client, server) = start(dir.path()).await;
        let p = client
            .update_product(update("garden-gloves", Some(999), Some(3)))
            .await
            .expect("update")
            .into_inner();
        assert_eq!((p.price.map(|m| m.amount_minor), p.stock), (Some(999), 3));
        let p = client
            .update_product(update("garden-gloves", None, Some(0)))
            .await
            .expect("stock only")
            .into_inner();
        assert_eq!((p.price.map(|m| m.amount_minor), p.stock), (Some(999), 0), "price kept");

        for (bad, field) in [
            (update("garden-gloves", Some(-1), None), "amount_minor"),
            (update("garden-gloves", None, Some(-5)), "stock"),
            (update("garden-gloves", None, None), "price"),
            (
                UpdateProductRequest {
                    product_id: "garden-gloves".into(),
                    price: Some(Money {
                        amount_minor: 1,
                        currency_code: "dollars".into(),
                    }),
                    stock: None,
                },
                "currency_code",
            ),
        ] {
            let err = client.update_product(bad).await.expect_err("invalid update");
            assert_eq!(err.code(), Code::InvalidArgument);
            assert!(err.message().contains(field), "{field}: {}", err.message());
        }
        let err = client
            .update_product(update("nope", None, Some(1)))
            .await
            .expect_err("unknown");
        assert_eq!(err.code(), Code::NotFound);
        server.stop().await.expect("stop");
    }
    let (mut client, _server) = start(dir.path()).await;
    assert_eq!(list_all(&mut client, 100, "").await.len(), SEEDED, "not seeded twice");
    let p = client
        .get_product(GetProductRequest {
            product_id: "garden-gloves".into(),
        })
        .await
        .expect("get");
    assert_eq!(p.into_inner().stock, 0, "the update survived a restart");
}

async fn next(s: &mut tonic::Streaming<meshwork_proto::catalog::ProductUpdate>) -> Product {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("an update in time")
        .expect("stream ok")
        .expect("stream open")
        .product
        .expect("product")
}

#[tokio::test]
async fn watch_sends_current_state_then_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut client, _server) = start(dir.path()).await;

    let mut stream = client
        .watch_products(WatchProductsRequest {
            product_ids: vec!["elec-ssd".into(), "toys-chess".into()],
        })
        .await
        .expect("watch")
        .into_inner();
    let a = next(&mut stream).await;
    let b = next(&mut stream).await;
    assert_eq!((a.id.as_str(), b.id.as_str()), ("elec-ssd", "toys-chess"));

    client
        .update_product(update("book-ddia", None, Some(1)))
        .await
        .expect("unwatched update");
    client
        .update_product(update("toys-chess", Some(4900), None))
        .await
        .expect("update");
    let changed = next(&mut stream).await;
    assert_eq!(changed.id, "toys-chess", "unwatched products are not sent");
    assert_eq!(changed.price.map(|m| m.amount_minor), Some(4900));

    let err = client
        .watch_products(WatchProductsRequest {
            product_ids: vec!["elec-ssd".into(), "ghost".into()],
        })
        .await
        .expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .watch_products(WatchProductsRequest::default())
        .await
        .expect_err("no ids");
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// A call whose baggage asks for a currency (as the gateway writes it for a
/// signed-in user) is shown prices in it, on every read and in the prices a
/// reservation answers with (what a checkout charges); without one, or with
/// one the rates do not know, the stored USD prices.
#[tokio::test]
async fn prices_follow_the_currency_in_the_calls_baggage() {
    use meshwork_proto::catalog::{ReserveStockRequest, StockItem};

    let dir = tempfile::tempdir().expect("tempdir");
    let (mut client, _server) = start(dir.path()).await;
    let with_baggage = |baggage: &'static str, id: &str| {
        let mut request = tonic::Request::new(GetProductRequest { product_id: id.into() });
        request
            .metadata_mut()
            .insert("baggage", baggage.parse().expect("value"));
        request
    };
    let stored = client
        .get_product(GetProductRequest {
            product_id: "book-ddia".into(),
        })
        .await
        .expect("get");
    let usd = stored.into_inner().price.expect("price");
    assert_eq!(usd.currency_code, "USD");

    let eur = client
        .get_product(with_baggage("user.id=u1,currency=EUR,locale=de-DE", "book-ddia"))
        .await;
    let eur = eur.expect("get").into_inner().price.expect("price");
    assert_eq!(eur.currency_code, "EUR");
    // The seeded rate: 0.92 EUR per USD, rounded half up to the cent.
    assert_eq!(
        eur.amount_minor,
        (usd.amount_minor * 92 + 50) / 100,
        "{usd:?} -> {eur:?}"
    );
    let yen = client.get_product(with_baggage("currency=JPY", "book-ddia")).await;
    let yen = yen.expect("get").into_inner().price.expect("price");
    assert_eq!(
        (yen.currency_code.as_str(), yen.amount_minor),
        ("JPY", (usd.amount_minor * 150 + 50) / 100)
    );
    let unknown = client.get_product(with_baggage("currency=XTS", "book-ddia")).await;
    assert_eq!(unknown.expect("get").into_inner().price.expect("price"), usd);

    let mut reserve = tonic::Request::new(ReserveStockRequest {
        reservation_id: "r-eur".into(),
        items: vec![StockItem {
            product_id: "book-ddia".into(),
            quantity: 1,
        }],
        hold_seconds: 5,
    });
    reserve
        .metadata_mut()
        .insert("baggage", "currency=EUR".parse().expect("value"));
    let reserved = client.reserve_stock(reserve).await.expect("reserve").into_inner();
    assert_eq!(reserved.products[0].price.as_ref(), Some(&eur));
}
