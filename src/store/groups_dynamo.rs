//! The DynamoDB group store: one item per membership in its own table (partition key `group`,
//! sort key `connectionId`, `domain`, `stage` and the session's `expiresAt` for TTL), and the
//! KEYS_ONLY global secondary index `byConnection` (partition key `connectionId`, sort key
//! `group`) to find a connection's memberships at cleanup. Reads are Queries, never Scans;
//! every call is counted in `socketless_dynamodb_calls_total`.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, Select, TimeToLiveSpecification, WriteRequest,
};

use super::StoreError;
use super::dynamo::{KEY, TTL_ATTRIBUTE};
use super::groups::{GroupStore, Member, MemberPage};
use crate::future::BoxFuture;
use crate::metrics::BackendMetrics;
use crate::timefmt::now_ms;

/// The partition key of the groups table.
pub const GROUP: &str = "group";
/// The index from a connection to its groups.
pub const BY_CONNECTION: &str = "byConnection";
/// Deletes in one BatchWriteItem, at most (DynamoDB's limit).
const BATCH: usize = 25;
/// Rounds of retrying a batch's unprocessed deletes.
const BATCH_RETRIES: usize = 3;

pub struct DynamoGroupStore {
    client: Client,
    table: String,
    metrics: Arc<BackendMetrics>,
}

type Item = HashMap<String, AttributeValue>;

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn key(group: &str, connection_id: &str) -> Item {
    HashMap::from([(GROUP.to_string(), s(group)), (KEY.to_string(), s(connection_id))])
}

fn text(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn member(item: &Item) -> Option<Member> {
    Some(Member {
        connection_id: text(item, KEY)?,
        domain: text(item, "domain").unwrap_or_default(),
        stage: text(item, "stage").unwrap_or_default(),
        expires_at: item
            .get(TTL_ATTRIBUTE)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    })
}

fn built<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::Rejected(e.to_string()))
}

fn attribute(name: &str) -> Result<AttributeDefinition, StoreError> {
    built(
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build(),
    )
}

fn key_element(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    built(KeySchemaElement::builder().attribute_name(name).key_type(kind).build())
}

impl DynamoGroupStore {
    pub fn new(sdk: &aws_config::SdkConfig, table: &str, endpoint: Option<&str>, metrics: Arc<BackendMetrics>) -> Self {
        let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk);
        if let Some(endpoint) = endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        DynamoGroupStore {
            client: Client::from_conf(builder.build()),
            table: table.to_string(),
            metrics,
        }
    }

    fn record<T, E, R>(&self, operation: &'static str, res: Result<T, SdkError<E, R>>) -> Result<T, StoreError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        super::dynamo::recorded(&self.metrics, operation, res)
    }

    /// Creates the table, its index and its TTL if the table does not exist. For local use:
    /// production tables come from CloudFormation.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let index = built(
            GlobalSecondaryIndex::builder()
                .index_name(BY_CONNECTION)
                .key_schema(key_element(KEY, KeyType::Hash)?)
                .key_schema(key_element(GROUP, KeyType::Range)?)
                .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
                .build(),
        )?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute(GROUP)?)
            .attribute_definitions(attribute(KEY)?)
            .key_schema(key_element(GROUP, KeyType::Hash)?)
            .key_schema(key_element(KEY, KeyType::Range)?)
            .global_secondary_indexes(index)
            .send()
            .await;
        match created {
            Err(err) if err.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {
                self.metrics.dynamodb("CreateTable", "exists");
                return Ok(());
            }
            res => self.record("CreateTable", res).map(drop)?,
        }
        let ttl = self
            .client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(built(
                TimeToLiveSpecification::builder()
                    .attribute_name(TTL_ATTRIBUTE)
                    .enabled(true)
                    .build(),
            )?)
            .send()
            .await;
        self.record("UpdateTimeToLive", ttl).map(drop)
    }

    /// One page of the index: a connection's groups after `start`.
    async fn index_page(
        &self,
        connection_id: &str,
        start: Option<Item>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<Item>), StoreError> {
        let res = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_CONNECTION)
            .key_condition_expression("#c = :c")
            .expression_attribute_names("#c", KEY)
            .expression_attribute_values(":c", s(connection_id))
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .set_exclusive_start_key(start)
            .send()
            .await;
        let out = self.record("Query", res)?;
        let groups = out.items().iter().filter_map(|i| text(i, GROUP)).collect();
        Ok((groups, out.last_evaluated_key().cloned()))
    }

    /// Deletes memberships 25 at a time, retrying what DynamoDB leaves unprocessed.
    async fn delete_all(&self, keys: Vec<Item>) -> Result<(), StoreError> {
        for chunk in keys.chunks(BATCH) {
            let mut requests = Vec::with_capacity(chunk.len());
            for k in chunk {
                let delete = built(DeleteRequest::builder().set_key(Some(k.clone())).build())?;
                requests.push(WriteRequest::builder().delete_request(delete).build());
            }
            for _ in 0..=BATCH_RETRIES {
                let res = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await;
                let out = self.record("BatchWriteItem", res)?;
                requests = out
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
            }
            if !requests.is_empty() {
                return Err(StoreError::Unavailable(format!(
                    "{} membership deletes left unprocessed",
                    requests.len()
                )));
            }
        }
        Ok(())
    }
}

impl GroupStore for DynamoGroupStore {
    fn join<'a>(&'a self, group: &'a str, member: &'a Member) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut item = key(group, &member.connection_id);
            item.insert("domain".into(), s(&member.domain));
            item.insert("stage".into(), s(&member.stage));
            item.insert(TTL_ATTRIBUTE.into(), AttributeValue::N(member.expires_at.to_string()));
            let res = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .send()
                .await;
            self.record("PutItem", res).map(drop)
        })
    }

    fn leave<'a>(&'a self, group: &'a str, connection_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let res = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key(group, connection_id)))
                .send()
                .await;
            self.record("DeleteItem", res).map(drop)
        })
    }

    fn members<'a>(
        &'a self,
        group: &'a str,
        start: Option<String>,
        limit: usize,
    ) -> BoxFuture<'a, Result<MemberPage, StoreError>> {
        Box::pin(async move {
            let res = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#g = :g")
                .expression_attribute_names("#g", GROUP)
                .expression_attribute_values(":g", s(group))
                .consistent_read(true)
                .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
                .set_exclusive_start_key(start.map(|id| key(group, &id)))
                .send()
                .await;
            let out = self.record("Query", res)?;
            let now = now_ms() / 1000;
            let members = out
                .items()
                .iter()
                .filter_map(member)
                .filter(|m| m.expires_at == 0 || m.expires_at >= now)
                .collect();
            let next = out.last_evaluated_key().and_then(|k| text(k, KEY));
            Ok(MemberPage { members, next })
        })
    }

    fn count<'a>(&'a self, group: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let now = (now_ms() / 1000).to_string();
            let mut total = 0u64;
            let mut start = None;
            loop {
                let res = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("#g = :g")
                    .filter_expression("#ex >= :now")
                    .expression_attribute_names("#g", GROUP)
                    .expression_attribute_names("#ex", TTL_ATTRIBUTE)
                    .expression_attribute_values(":g", s(group))
                    .expression_attribute_values(":now", AttributeValue::N(now.clone()))
                    .select(Select::Count)
                    .consistent_read(true)
                    .set_exclusive_start_key(start)
                    .send()
                    .await;
                let out = self.record("Query", res)?;
                total += u64::try_from(out.count()).unwrap_or(0);
                match out.last_evaluated_key() {
                    Some(k) if !k.is_empty() => start = Some(k.clone()),
                    _ => return Ok(total),
                }
            }
        })
    }

    fn groups_of<'a>(&'a self, connection_id: &'a str, limit: usize) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move { Ok(self.index_page(connection_id, None, limit).await?.0) })
    }

    fn forget<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            let mut keys = Vec::new();
            let mut start = None;
            loop {
                let (groups, next) = self.index_page(connection_id, start, 1000).await?;
                keys.extend(groups.iter().map(|g| key(g, connection_id)));
                match next {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => break,
                }
            }
            let n = keys.len();
            if n > 0 {
                self.delete_all(keys).await?;
            }
            Ok(n)
        })
    }
}
