//! Resume records in the DynamoDB sessions table: one item per logical session under the key
//! `session#<id>` (see [`super::resume`]), written whole by a conditional PutItem on its
//! `version`, read by one consistent GetItem, deleted by a conditional DeleteItem. The gap
//! buffer is a list of binary values in the item, so the bounds (`--resume-buffer-bytes`) keep
//! it within DynamoDB's 400 KB item limit.

use std::collections::HashMap;

use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::StoreError;
use super::dynamo::{DynamoStore, KEY, TTL_ATTRIBUTE, n, s};
use super::resume::{Buffered, Held, ResumeRecord, record_key};

const VERSION: &str = "version";

fn item(r: &ResumeRecord) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (KEY.to_string(), s(&record_key(&r.session_id))),
        ("sessionId".to_string(), s(&r.session_id)),
        ("origin".to_string(), s(&r.origin)),
        ("current".to_string(), s(&r.connection_id)),
        ("domain".to_string(), s(&r.domain)),
        ("stage".to_string(), s(&r.stage)),
        ("overflow".to_string(), AttributeValue::Bool(r.overflow)),
        ("replaying".to_string(), AttributeValue::Bool(r.replaying)),
        (VERSION.to_string(), n(r.version)),
        (TTL_ATTRIBUTE.to_string(), n(r.expires_at)),
    ]);
    if let Some(at) = r.detached_at {
        item.insert("detachedAt".to_string(), n(at));
    }
    if let Some(p) = &r.principal_id {
        item.insert("principalId".to_string(), s(p));
    }
    if let Some(h) = &r.held {
        item.insert("heldBy".to_string(), s(&h.connection_id));
        item.insert("heldUntil".to_string(), n(h.until));
    }
    if !r.attributes.is_empty() {
        let map = r.attributes.iter().map(|(k, v)| (k.to_string(), s(v))).collect();
        item.insert("attributes".to_string(), AttributeValue::M(map));
    }
    if !r.buffer.is_empty() {
        let list = r
            .buffer
            .iter()
            .map(|b| {
                AttributeValue::M(HashMap::from([
                    ("d".to_string(), AttributeValue::B(Blob::new(b.data.to_vec()))),
                    ("b".to_string(), AttributeValue::Bool(b.binary)),
                ]))
            })
            .collect();
        item.insert("buffer".to_string(), AttributeValue::L(list));
    }
    item
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Option<ResumeRecord> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let flag = |k: &str| item.get(k).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
    let buffer = item
        .get("buffer")
        .and_then(|v| v.as_l().ok())
        .map(|l| {
            l.iter()
                .filter_map(|e| {
                    let m = e.as_m().ok()?;
                    Some(Buffered {
                        data: bytes::Bytes::copy_from_slice(m.get("d")?.as_b().ok()?.as_ref()),
                        binary: m.get("b").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ResumeRecord {
        session_id: text("sessionId")?,
        origin: text("origin").unwrap_or_default(),
        connection_id: text("current").unwrap_or_default(),
        detached_at: num("detachedAt"),
        principal_id: text("principalId"),
        attributes: item
            .get("attributes")
            .and_then(|v| v.as_m().ok())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_s().ok()?.clone())))
                    .collect()
            })
            .unwrap_or_default(),
        domain: text("domain").unwrap_or_default(),
        stage: text("stage").unwrap_or_default(),
        buffer,
        overflow: flag("overflow"),
        replaying: flag("replaying"),
        held: text("heldBy").map(|connection_id| Held {
            connection_id,
            until: num("heldUntil").unwrap_or(0),
        }),
        version: u64::try_from(num(VERSION).unwrap_or(0)).unwrap_or(0),
        expires_at: num(TTL_ATTRIBUTE).unwrap_or(0),
    })
}

impl DynamoStore {
    pub(super) async fn get_resume_item(&self, session_id: &str) -> Result<Option<ResumeRecord>, StoreError> {
        let res = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(KEY, s(&record_key(session_id)))
            .consistent_read(true)
            .send()
            .await;
        Ok(self.record("GetItem", res)?.item().and_then(from_item))
    }

    pub(super) async fn put_resume_item(&self, r: &ResumeRecord, expected: Option<u64>) -> Result<bool, StoreError> {
        let put = self.client.put_item().table_name(&self.table).set_item(Some(item(r)));
        let put = match expected {
            None => put
                .condition_expression("attribute_not_exists(#k)")
                .expression_attribute_names("#k", KEY),
            Some(v) => put
                .condition_expression("#v = :v")
                .expression_attribute_names("#v", VERSION)
                .expression_attribute_values(":v", n(v)),
        };
        let res = put.send().await;
        self.record_conditional("PutItem", res, PutItemError::is_conditional_check_failed_exception)
    }

    pub(super) async fn delete_resume_item(&self, session_id: &str, expected: u64) -> Result<bool, StoreError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, s(&record_key(session_id)))
            .condition_expression("#v = :v")
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":v", n(expected))
            .send()
            .await;
        self.record_conditional(
            "DeleteItem",
            res,
            DeleteItemError::is_conditional_check_failed_exception,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_its_item() {
        let r = ResumeRecord {
            session_id: "abc".into(),
            origin: "c1=".into(),
            connection_id: "c2=".into(),
            detached_at: Some(5),
            principal_id: Some("alice".into()),
            attributes: [("tenant", "acme")].into_iter().collect(),
            domain: "d".into(),
            stage: "s".into(),
            buffer: vec![
                Buffered {
                    data: bytes::Bytes::from_static(b"one"),
                    binary: false,
                },
                Buffered {
                    data: bytes::Bytes::from_static(&[0, 1, 2]),
                    binary: true,
                },
            ],
            overflow: true,
            replaying: false,
            held: Some(Held {
                connection_id: "c1=".into(),
                until: 1234,
            }),
            version: 7,
            expires_at: 99,
        };
        let it = item(&r);
        assert_eq!(it[KEY].as_s().unwrap(), "session#abc");
        assert_eq!(from_item(&it), Some(r));
    }
}
