//! The DynamoDB session store. One item per connection, keyed by `connectionId`, expiring
//! through the table's TTL on `expiresAt`; `principalId` (a string) and `attributes` (a map of
//! strings) only when the connect set them; `disconnectingSince`, `leaseUntil` and `leaseOwner`
//! once its `/disconnect` is under way. Every method is exactly one DynamoDB call, counted in
//! `socketless_dynamodb_calls_total`.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TimeToLiveSpecification,
};

use super::{Claim, ClaimRequest, Created, Disconnecting, Page, ResumeRecord, Session, SessionStore, StoreError};
use crate::future::BoxFuture;
use crate::metrics::BackendMetrics;

pub const KEY: &str = "connectionId";
pub const TTL_ATTRIBUTE: &str = "expiresAt";
const PRINCIPAL: &str = "principalId";
const ATTRIBUTES: &str = "attributes";
const DISCONNECTING_SINCE: &str = "disconnectingSince";
const LEASE_UNTIL: &str = "leaseUntil";
const LEASE_OWNER: &str = "leaseOwner";
const SESSION_ID: &str = "sessionId";
const RESUME_ORIGIN: &str = "resumeOrigin";

/// Where the store lives.
#[derive(Debug, Clone)]
pub struct DynamoStoreConfig {
    pub table: String,
    /// Overrides the endpoint (moto, LocalStack); `AWS_ENDPOINT_URL` works too.
    pub endpoint: Option<String>,
}

pub struct DynamoStore {
    pub(super) client: Client,
    pub(super) table: String,
    metrics: Arc<BackendMetrics>,
}

impl DynamoStore {
    pub fn new(sdk: &aws_config::SdkConfig, config: DynamoStoreConfig, metrics: Arc<BackendMetrics>) -> Self {
        let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        DynamoStore {
            client: Client::from_conf(builder.build()),
            table: config.table,
            metrics,
        }
    }

    /// Creates the table with its TTL if it does not exist. For local use only: production
    /// tables come from CloudFormation with encryption and point-in-time recovery.
    pub async fn create_table(&self) -> Result<(), StoreError> {
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| StoreError::Rejected(e.to_string()))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(KEY)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| StoreError::Rejected(e.to_string()))?,
            )
            .send()
            .await;
        match created {
            Ok(_) => self.metrics.dynamodb("CreateTable", "ok"),
            Err(err) if err.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => {
                self.metrics.dynamodb("CreateTable", "exists");
                return Ok(());
            }
            Err(err) => return Err(self.fail("CreateTable", err)),
        }
        let ttl = self
            .client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(TTL_ATTRIBUTE)
                    .enabled(true)
                    .build()
                    .map_err(|e| StoreError::Rejected(e.to_string()))?,
            )
            .send()
            .await;
        self.record("UpdateTimeToLive", ttl).map(drop)
    }

    fn fail<E, R>(&self, operation: &'static str, err: SdkError<E, R>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        failed(&self.metrics, operation, err)
    }

    /// A call's result, its outcome counted (see [`recorded`]).
    pub(super) fn record<T, E, R>(
        &self,
        operation: &'static str,
        res: Result<T, SdkError<E, R>>,
    ) -> Result<T, StoreError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        recorded(&self.metrics, operation, res)
    }

    /// [`Self::record`] for a conditional write: whether it was made, `false` when its condition
    /// did not hold.
    pub(super) fn record_conditional<T, E, R>(
        &self,
        operation: &'static str,
        res: Result<T, SdkError<E, R>>,
        condition_failed: fn(&E) -> bool,
    ) -> Result<bool, StoreError>
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        match res {
            Err(err) if err.as_service_error().is_some_and(condition_failed) => {
                self.metrics.dynamodb(operation, "condition_failed");
                Ok(false)
            }
            res => self.record(operation, res).map(|_| true),
        }
    }
}

/// A call's result, its outcome counted: `ok`, or the error's kind through [`failed`]. Both
/// DynamoDB stores (sessions, group memberships) count their calls through this.
pub(super) fn recorded<T, E, R>(
    metrics: &BackendMetrics,
    operation: &'static str,
    res: Result<T, SdkError<E, R>>,
) -> Result<T, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match res {
        Ok(out) => {
            metrics.dynamodb(operation, "ok");
            Ok(out)
        }
        Err(err) => Err(failed(metrics, operation, err)),
    }
}

/// A failed call's error, its outcome (`timeout` or `error`) counted.
fn failed<E, R>(metrics: &BackendMetrics, operation: &'static str, err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let out = classify(err);
    let outcome = match out {
        StoreError::Timeout(_) => "timeout",
        _ => "error",
    };
    metrics.dynamodb(operation, outcome);
    out
}

/// Maps an SDK error onto the store's error kinds. Throttling and server faults are
/// "unavailable" (retryable by the caller), client faults are "rejected".
fn classify<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match &err {
        SdkError::TimeoutError(_) => StoreError::Timeout("no answer within the AWS timeout".into()),
        SdkError::DispatchFailure(d) if d.is_timeout() => StoreError::Timeout(DisplayErrorContext(&err).to_string()),
        SdkError::DispatchFailure(_) => StoreError::Unavailable(DisplayErrorContext(&err).to_string()),
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("Unknown").to_string();
            let message = s.err().message().unwrap_or_default().to_string();
            match code.as_str() {
                "ValidationException"
                | "ResourceNotFoundException"
                | "AccessDeniedException"
                | "UnrecognizedClientException" => StoreError::Rejected(format!("{code}: {message}")),
                _ => StoreError::Unavailable(format!("{code}: {message}")),
            }
        }
        _ => StoreError::Unavailable(DisplayErrorContext(&err).to_string()),
    }
}

pub(super) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn item(session: &Session) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (KEY.to_string(), s(&session.connection_id)),
        ("connectedAt".to_string(), n(session.connected_at)),
        ("lastSeenAt".to_string(), n(session.last_seen_at)),
        ("sourceIp".to_string(), s(&session.source_ip)),
        ("userAgent".to_string(), s(&session.user_agent)),
        ("domain".to_string(), s(&session.domain)),
        ("stage".to_string(), s(&session.stage)),
        ("messageCount".to_string(), n(session.message_count)),
        (TTL_ATTRIBUTE.to_string(), n(session.expires_at)),
    ]);
    if let Some(principal) = &session.principal_id {
        item.insert(PRINCIPAL.to_string(), s(principal));
    }
    if let Some(id) = &session.session_id {
        item.insert(SESSION_ID.to_string(), s(id));
    }
    if let Some(origin) = &session.resume_origin {
        item.insert(RESUME_ORIGIN.to_string(), s(origin));
    }
    if !session.attributes.is_empty() {
        let map = session.attributes.iter().map(|(k, v)| (k.to_string(), s(v))).collect();
        item.insert(ATTRIBUTES.to_string(), AttributeValue::M(map));
    }
    item
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Option<Session> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    Some(Session {
        connection_id: item.get(KEY)?.as_s().ok()?.clone(),
        connected_at: num("connectedAt"),
        last_seen_at: num("lastSeenAt"),
        source_ip: text("sourceIp"),
        user_agent: text("userAgent"),
        domain: text("domain"),
        stage: text("stage"),
        message_count: u64::try_from(num("messageCount")).unwrap_or(0),
        expires_at: num(TTL_ATTRIBUTE),
        principal_id: item.get(PRINCIPAL).and_then(|v| v.as_s().ok()).cloned(),
        attributes: item
            .get(ATTRIBUTES)
            .and_then(|v| v.as_m().ok())
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_s().ok()?.clone())))
                    .collect()
            })
            .unwrap_or_default(),
        session_id: item.get(SESSION_ID).and_then(|v| v.as_s().ok()).cloned(),
        resume_origin: item.get(RESUME_ORIGIN).and_then(|v| v.as_s().ok()).cloned(),
        disconnect: item.contains_key(LEASE_UNTIL).then(|| Disconnecting {
            since: num(DISCONNECTING_SINCE),
            lease_until: num(LEASE_UNTIL),
            owner: text(LEASE_OWNER),
        }),
    })
}

impl SessionStore for DynamoStore {
    fn create<'a>(&'a self, session: &'a Session) -> BoxFuture<'a, Result<Created, StoreError>> {
        Box::pin(async move {
            let res = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item(session)))
                .condition_expression("attribute_not_exists(#k)")
                .expression_attribute_names("#k", KEY)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            // The item that made the condition fail comes back with the refusal.
            let existing = match &res {
                Err(err) => match err.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(e)) => e.item().and_then(from_item),
                    _ => None,
                },
                Ok(_) => None,
            };
            let made = self.record_conditional("PutItem", res, PutItemError::is_conditional_check_failed_exception)?;
            Ok(if made {
                Created::Created
            } else {
                Created::AlreadyExists(existing.map(Box::new))
            })
        })
    }

    fn upsert<'a>(&'a self, session: &'a Session, add_messages: u64) -> BoxFuture<'a, Result<Session, StoreError>> {
        Box::pin(async move {
            let res = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(KEY, s(&session.connection_id))
                .update_expression(
                    "SET #ls = :ls, #ca = if_not_exists(#ca, :ca), #ip = if_not_exists(#ip, :ip), \
                     #ua = if_not_exists(#ua, :ua), #d = if_not_exists(#d, :d), #st = if_not_exists(#st, :st), \
                     #ex = if_not_exists(#ex, :ex) ADD #mc :n",
                )
                .expression_attribute_names("#ls", "lastSeenAt")
                .expression_attribute_names("#ca", "connectedAt")
                .expression_attribute_names("#ip", "sourceIp")
                .expression_attribute_names("#ua", "userAgent")
                .expression_attribute_names("#d", "domain")
                .expression_attribute_names("#st", "stage")
                .expression_attribute_names("#ex", TTL_ATTRIBUTE)
                .expression_attribute_names("#mc", "messageCount")
                .expression_attribute_values(":ls", n(session.last_seen_at))
                .expression_attribute_values(":ca", n(session.connected_at))
                .expression_attribute_values(":ip", s(&session.source_ip))
                .expression_attribute_values(":ua", s(&session.user_agent))
                .expression_attribute_values(":d", s(&session.domain))
                .expression_attribute_values(":st", s(&session.stage))
                .expression_attribute_values(":ex", n(session.expires_at))
                .expression_attribute_values(":n", n(add_messages))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            let out = self.record("UpdateItem", res)?;
            // The session as stored: with the principal and attributes its connect wrote.
            Ok(out.attributes().and_then(from_item).unwrap_or_else(|| session.clone()))
        })
    }

    fn touch_existing<'a>(
        &'a self,
        connection_id: &'a str,
        last_seen_at: i64,
        add_messages: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let res = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(KEY, s(connection_id))
                .update_expression("SET #ls = :ls ADD #mc :n")
                .condition_expression("attribute_exists(#k)")
                .expression_attribute_names("#k", KEY)
                .expression_attribute_names("#ls", "lastSeenAt")
                .expression_attribute_names("#mc", "messageCount")
                .expression_attribute_values(":ls", n(last_seen_at))
                .expression_attribute_values(":n", n(add_messages))
                .send()
                .await;
            self.record_conditional(
                "UpdateItem",
                res,
                UpdateItemError::is_conditional_check_failed_exception,
            )
        })
    }

    fn get<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        Box::pin(async move {
            let res = self
                .client
                .get_item()
                .table_name(&self.table)
                .key(KEY, s(connection_id))
                .consistent_read(true)
                .send()
                .await;
            Ok(self.record("GetItem", res)?.item().and_then(from_item))
        })
    }

    fn delete<'a>(&'a self, connection_id: &'a str) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        Box::pin(async move {
            let res = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key(KEY, s(connection_id))
                .return_values(ReturnValue::AllOld)
                .send()
                .await;
            let out = self.record("DeleteItem", res)?;
            Ok(out.attributes().filter(|a| !a.is_empty()).and_then(from_item))
        })
    }

    fn scan<'a>(&'a self, start: Option<String>, limit: usize) -> BoxFuture<'a, Result<Page, StoreError>> {
        Box::pin(async move {
            let limit = i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
            let res = self
                .client
                .scan()
                .table_name(&self.table)
                .limit(limit)
                .set_exclusive_start_key(start.map(|k| HashMap::from([(KEY.to_string(), s(&k))])))
                .send()
                .await;
            let out = self.record("Scan", res)?;
            // Resume records share the table under keys no connection id can have: skipped here,
            // so no reader of the scan (listing, count, broadcast, sweep) ever sees one.
            let sessions = out
                .items()
                .iter()
                .filter_map(from_item)
                .filter(|s| !super::resume::is_record_key(&s.connection_id))
                .collect();
            let next = out
                .last_evaluated_key()
                .and_then(|k| k.get(KEY))
                .and_then(|v| v.as_s().ok())
                .cloned();
            Ok(Page { sessions, next })
        })
    }

    fn get_resume<'a>(&'a self, session_id: &'a str) -> BoxFuture<'a, Result<Option<ResumeRecord>, StoreError>> {
        Box::pin(self.get_resume_item(session_id))
    }

    fn put_resume<'a>(
        &'a self,
        record: &'a ResumeRecord,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.put_resume_item(record, expected))
    }

    fn delete_resume<'a>(&'a self, session_id: &'a str, expected: u64) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.delete_resume_item(session_id, expected))
    }

    fn claim_disconnect<'a>(
        &'a self,
        connection_id: &'a str,
        claim: &'a ClaimRequest<'a>,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(async move {
            let mut condition = "attribute_exists(#k) AND (attribute_not_exists(#lease) OR #lease < :now)".to_string();
            let mut request = self.client.update_item();
            if let Some(before) = claim.seen_before {
                condition.push_str(" AND #ls < :before");
                request = request
                    .expression_attribute_names("#ls", "lastSeenAt")
                    .expression_attribute_values(":before", n(before));
            }
            let res = request
                .table_name(&self.table)
                .key(KEY, s(connection_id))
                .update_expression(
                    "SET #since = if_not_exists(#since, :now), #lease = :lease, #owner = :owner, #ex = :ex",
                )
                .condition_expression(condition)
                .expression_attribute_names("#k", KEY)
                .expression_attribute_names("#since", DISCONNECTING_SINCE)
                .expression_attribute_names("#lease", LEASE_UNTIL)
                .expression_attribute_names("#owner", LEASE_OWNER)
                .expression_attribute_names("#ex", TTL_ATTRIBUTE)
                .expression_attribute_values(":now", n(claim.now))
                .expression_attribute_values(":lease", n(claim.lease_until))
                .expression_attribute_values(":owner", s(claim.owner))
                .expression_attribute_values(":ex", n(claim.expires_at))
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            // A refusal with the item means someone holds the lease; without, no session.
            let held = match &res {
                Err(err) => match err.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(e)) => {
                        e.item().is_some_and(|item| !item.is_empty())
                    }
                    _ => false,
                },
                Ok(_) => false,
            };
            let stored = match &res {
                Ok(out) => out.attributes().and_then(from_item),
                Err(_) => None,
            };
            let made = self.record_conditional(
                "UpdateItem",
                res,
                UpdateItemError::is_conditional_check_failed_exception,
            )?;
            Ok(match (made, stored) {
                (true, Some(session)) => Claim::Claimed(Box::new(session)),
                (true, None) => {
                    return Err(StoreError::Rejected("the claimed item came back unreadable".into()));
                }
                (false, _) if held => Claim::Held,
                (false, _) => Claim::Missing,
            })
        })
    }

    fn renew_disconnect<'a>(
        &'a self,
        connection_id: &'a str,
        owner: &'a str,
        lease_until: i64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let res = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(KEY, s(connection_id))
                .update_expression("SET #lease = :lease")
                .condition_expression("#owner = :owner")
                .expression_attribute_names("#lease", LEASE_UNTIL)
                .expression_attribute_names("#owner", LEASE_OWNER)
                .expression_attribute_values(":lease", n(lease_until))
                .expression_attribute_values(":owner", s(owner))
                .send()
                .await;
            self.record_conditional(
                "UpdateItem",
                res,
                UpdateItemError::is_conditional_check_failed_exception,
            )
        })
    }
}
