//! Groups on the DynamoDB store, against a moto server this test starts: the table's keys, its
//! KEYS_ONLY `byConnection` index and TTL attribute as `--create-table` makes them; join, leave,
//! exact paging (2,500 members in pages of 1,000) by Query, never Scan; a publish from another
//! `serve` than the one that joined; cleanup at `/disconnect` through the index and
//! BatchWriteItem; and 410s pruned from every group.

mod common;

use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, KeyType, ProjectionType, PutRequest, WriteRequest};
use common::groups::*;
use common::*;
use http::StatusCode;

fn dynamodb_args(moto: &Moto, table: &str, push_endpoint: Option<&str>) -> socketless::serve::ServeArgs {
    let mut a = args();
    a.store = "dynamodb".into();
    a.table = table.into();
    a.dynamodb_endpoint = Some(moto.endpoint.clone());
    a.create_table = true;
    a.push_endpoint = push_endpoint.map(str::to_owned);
    a.push_batch = "off".into();
    a.aws_timeout = "5s".into();
    a
}

fn db(moto: &Moto) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(&sdk(Duration::from_secs(5)))
        .endpoint_url(&moto.endpoint)
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

async fn ddb_calls(b: &Backend, op: &str) -> f64 {
    let (_, text) = get(&b.internal_url("/metrics")).await;
    metric_sum(
        &text,
        "socketless_dynamodb_calls_total",
        &[&format!("operation=\"{op}\"")],
    )
}

#[tokio::test]
async fn the_table_has_its_keys_index_and_ttl() {
    let moto = Moto::start().await;
    let table = format!("sessions-{}", free_port());
    let b = start(dynamodb_args(&moto, &table, None)).await;
    let db = db(&moto);
    let groups_table = format!("{table}-groups");
    let desc = db.describe_table().table_name(&groups_table).send().await.unwrap();
    let t = desc.table().unwrap();
    let keys: Vec<(String, KeyType)> = t
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_string(), k.key_type().clone()))
        .collect();
    assert_eq!(
        keys,
        vec![("group".into(), KeyType::Hash), ("connectionId".into(), KeyType::Range)]
    );
    let index = &t.global_secondary_indexes()[0];
    assert_eq!(index.index_name(), Some("byConnection"));
    let index_keys: Vec<&str> = index.key_schema().iter().map(|k| k.attribute_name()).collect();
    assert_eq!(index_keys, vec!["connectionId", "group"]);
    assert_eq!(
        index.projection().and_then(|p| p.projection_type()),
        Some(&ProjectionType::KeysOnly)
    );
    let ttl = db
        .describe_time_to_live()
        .table_name(&groups_table)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description().and_then(|d| d.attribute_name()),
        Some("expiresAt")
    );
    // One item per membership, with the session's TTL.
    let id = owned_id(0, 1);
    connect(&b, &id).await;
    assert_eq!(join(&b, "room", &id).await.0, StatusCode::NO_CONTENT);
    assert_eq!(join(&b, "room", &id).await.0, StatusCode::NO_CONTENT);
    let items = db
        .scan()
        .table_name(&groups_table)
        .send()
        .await
        .unwrap()
        .items()
        .to_vec();
    assert_eq!(items.len(), 1);
    let session = db
        .get_item()
        .table_name(&table)
        .key("connectionId", AttributeValue::S(id.clone()))
        .send()
        .await
        .unwrap();
    let session_ttl = session.item().unwrap()["expiresAt"].clone();
    assert_eq!(items[0]["expiresAt"], session_ttl);
    assert_eq!(items[0]["group"], AttributeValue::S("room".into()));
    assert_eq!(leave(&b, "room", &id).await, StatusCode::NO_CONTENT);
    assert_eq!(leave(&b, "room", &id).await, StatusCode::NO_CONTENT);
    assert_eq!(count(&b, "room").await, 0);
    assert_eq!(join(&b, "room", &owned_id(0, 2)).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pages_are_exact_and_any_pod_publishes() {
    let moto = Moto::start().await;
    let table = format!("sessions-{}", free_port());
    let fake = FakeConnections::start().await;
    // Ten join through one `serve`; the rest are written straight into the table, as other
    // pods would have (thousands of joins through moto take a minute on a loaded machine).
    let a = start(dynamodb_args(&moto, &table, Some(&fake.endpoint()))).await;
    let mut ids: Vec<String> = (0..2500).map(|n| owned_id((n % 4) as u8, n)).collect();
    let t0 = std::time::Instant::now();
    for id in &ids[..10] {
        connect(&a, id).await;
        assert_eq!(join(&a, "big", id).await.0, StatusCode::NO_CONTENT);
    }
    let expires = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600)
        .to_string();
    let db = db(&moto);
    for chunk in ids[10..].chunks(25) {
        let writes = chunk
            .iter()
            .map(|id| {
                let item = [
                    ("group", AttributeValue::S("big".into())),
                    ("connectionId", AttributeValue::S(id.clone())),
                    ("domain", AttributeValue::S("example.test".into())),
                    ("stage", AttributeValue::S("dev".into())),
                    ("expiresAt", AttributeValue::N(expires.clone())),
                ];
                let put = PutRequest::builder()
                    .set_item(Some(item.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
                    .build()
                    .unwrap();
                WriteRequest::builder().put_request(put).build()
            })
            .collect();
        db.batch_write_item()
            .request_items(format!("{table}-groups"), writes)
            .send()
            .await
            .unwrap();
    }
    eprintln!("10 joins, 2490 written: {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    // A second `serve` on the same tables: it sees and reaches every member.
    let b = start(dynamodb_args(&moto, &table, Some(&fake.endpoint()))).await;
    assert_eq!(count(&b, "big").await, 2500);
    let scans = ddb_calls(&b, "Scan").await;
    let (members, sizes) = all_members(&b, "big", 1000).await;
    assert_eq!(sizes, vec![1000, 1000, 500]);
    ids.sort();
    assert_eq!(members, ids);
    eprintln!("count and three pages: {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    let (s, v) = publish(&b, "big", "to all").await;
    eprintln!("publish to 2500: {:?}", t0.elapsed());
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["members"], 2500);
    assert_eq!(v["delivered"], 2500);
    assert_eq!(ddb_calls(&b, "Scan").await, scans, "groups are read by Query only");
    let posts = fake.calls().iter().filter(|c| c.method == "POST").count();
    assert_eq!(posts, 2500);
}

#[tokio::test]
async fn disconnect_and_gone_clean_up_every_membership() {
    let moto = Moto::start().await;
    let table = format!("sessions-{}", free_port());
    let fake = FakeConnections::start().await;
    let b = start(dynamodb_args(&moto, &table, Some(&fake.endpoint()))).await;
    let ids: Vec<String> = (0..4).map(|n| owned_id(1, n)).collect();
    for id in &ids {
        connect(&b, id).await;
        for g in ["a", "b", "c"] {
            assert_eq!(join(&b, g, id).await.0, StatusCode::NO_CONTENT);
        }
    }
    let batches = ddb_calls(&b, "BatchWriteItem").await;
    let (s, _) = call(&b, "/disconnect", &ids[0], "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        ddb_calls(&b, "BatchWriteItem").await,
        batches + 1.0,
        "one batch for three memberships"
    );
    for g in ["a", "b", "c"] {
        assert_eq!(count(&b, g).await, 3, "{g}");
    }
    fake.mark_gone(&ids[1]);
    let (_, v) = publish(&b, "a", "x").await;
    assert_eq!((v["delivered"].as_u64(), v["gone"].as_u64()), (Some(2), Some(1)), "{v}");
    for g in ["a", "b", "c"] {
        let (members, _) = all_members(&b, g, 10).await;
        assert_eq!(members.len(), 2, "{g}: the gone member left every group");
        assert!(!members.contains(&ids[1]));
    }
    let db = db(&moto);
    let left = db.scan().table_name(format!("{table}-groups")).send().await.unwrap();
    assert_eq!(left.count(), 6);
}
