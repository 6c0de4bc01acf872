//! `voice_due.v1`: what to offer a user now, answered from Redis in one round trip —
//! or from the relational `reminders.v1` + `catalog.v1` when Redis is down.
//!
//! Keys (under the prefix): `due:{user}` — sorted set of open reminder ids scored by
//! due time (ms); `offer:{user}` — hash reminder id → offer JSON; `price:{sku}` — the
//! catalog entry JSON. One Lua script reads all three.

use chrono::{DateTime, Utc};
use eventfold_event_schemas::{DomainEvent, RecordedEvent};
use redis::{Pipeline, Script};
use serde::{Deserialize, Serialize};

use crate::redis_sink::{RedisKeys, RedisProjection};
use crate::runtime::Projection;
use crate::sql::{from_millis, millis, ReadDb};
use crate::{models, Result};

/// The projection.
#[derive(Debug, Clone, Copy, Default)]
pub struct VoiceDueProjection;

const HANDLES: &[&str] = &[
    "ReminderScheduled",
    "ReminderOffered",
    "ReorderAccepted",
    "ReminderDeclined",
    "ReminderSnoozed",
    "ReminderSuperseded",
    "PriceChanged",
];

impl Projection for VoiceDueProjection {
    fn name(&self) -> &'static str {
        "voice_due.v1"
    }
    fn handles(&self, event_type: &str) -> bool {
        HANDLES.contains(&event_type)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Offer {
    sku: String,
    title: String,
    quantity: u32,
    last_unit_price: i64,
    currency: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Price {
    title: String,
    unit_price: i64,
    currency: String,
    available: bool,
    delivery_days: u32,
}

impl RedisProjection for VoiceDueProjection {
    fn key_families(&self) -> &'static [&'static str] {
        &["due:", "offer:", "price:"]
    }

    fn apply(
        &self,
        pipe: &mut Pipeline,
        keys: &RedisKeys,
        event: &DomainEvent,
        _record: &RecordedEvent,
    ) -> Result<()> {
        match event {
            DomainEvent::ReminderScheduled(e) => {
                let offer = Offer {
                    sku: e.sku.clone(),
                    title: e.title.clone(),
                    quantity: e.quantity,
                    last_unit_price: e.last_unit_price,
                    currency: e.currency.clone(),
                };
                let id = e.reminder_id.to_string();
                pipe.zadd(
                    keys.key(format!("due:{}", e.user_id)),
                    &id,
                    millis(e.due_at),
                )
                .ignore();
                pipe.hset(keys.key(format!("offer:{}", e.user_id)), &id, json(&offer))
                    .ignore();
            }
            DomainEvent::ReminderSnoozed(e) => {
                // XX: only a reminder still open moves; a closed one stays gone.
                pipe.cmd("ZADD")
                    .arg(keys.key(format!("due:{}", e.user_id)))
                    .arg("XX")
                    .arg(millis(e.until))
                    .arg(e.reminder_id.to_string())
                    .ignore();
            }
            DomainEvent::ReorderAccepted(e) => {
                close(pipe, keys, &e.user_id, &e.reminder_id.to_string())
            }
            DomainEvent::ReminderDeclined(e) => {
                close(pipe, keys, &e.user_id, &e.reminder_id.to_string())
            }
            DomainEvent::ReminderSuperseded(e) => {
                close(pipe, keys, &e.user_id, &e.reminder_id.to_string())
            }
            DomainEvent::PriceChanged(p) => {
                let price = Price {
                    title: p.title.clone(),
                    unit_price: p.unit_price,
                    currency: p.currency.clone(),
                    available: p.available,
                    delivery_days: p.delivery_days,
                };
                pipe.set(keys.key(format!("price:{}", p.sku)), json(&price))
                    .ignore();
            }
            _ => {}
        }
        Ok(())
    }
}

/// JSON text of a value (these plain structs cannot fail to serialise).
fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn close(pipe: &mut Pipeline, keys: &RedisKeys, user_id: &str, reminder_id: &str) {
    pipe.zrem(keys.key(format!("due:{user_id}")), reminder_id)
        .ignore();
    pipe.hdel(keys.key(format!("offer:{user_id}")), reminder_id)
        .ignore();
}

/// What the speaker should offer now.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct DueOffer {
    /// The reminder to answer.
    #[schemars(with = "uuid::Uuid")]
    pub reminder_id: String,
    /// What.
    pub sku: String,
    /// Its title.
    pub title: String,
    /// Units.
    pub quantity: u32,
    /// Current catalog price per unit (or the last price paid if the catalog has none).
    pub unit_price: i64,
    /// ISO 4217.
    pub currency: String,
    /// Whether the catalog can deliver it now.
    pub available: bool,
    /// Due since.
    pub due_at: DateTime<Utc>,
    /// The sentence to say.
    pub text: String,
}

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The Redis model.
    Redis,
    /// The relational fallback (Redis unavailable or not configured).
    Relational,
}

fn money(minor: i64, currency: &str) -> String {
    format!("{}.{:02} {currency}", minor / 100, (minor % 100).abs())
}

fn say(title: &str, quantity: u32, unit_price: i64, currency: &str, available: bool) -> String {
    if available {
        format!(
            "Time to re-order {title}? {quantity} × {} — shall I order it?",
            money(unit_price, currency)
        )
    } else {
        format!("You usually re-order {title} about now, but it is not available at the moment.")
    }
}

const SCRIPT: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = {}
for i = 1, #ids, 2 do
  local offer = redis.call('HGET', KEYS[2], ids[i])
  local price = false
  if offer then
    -- The SKU without decoding the whole offer: in JSON without a backslash every
    -- quote is structural, so the key can only be the offer's own `sku`.
    local sku = nil
    if not string.find(offer, '\\', 1, true) then
      sku = string.match(offer, '"sku":"([^"]*)"')
    end
    if not sku then
      sku = cjson.decode(offer).sku
    end
    price = redis.call('GET', ARGV[3] .. sku)
  end
  out[#out + 1] = ids[i]
  out[#out + 1] = ids[i + 1]
  out[#out + 1] = offer or ''
  out[#out + 1] = price or ''
end
return out
"#;

/// Due offers for `user_id` from Redis: one script call, one round trip.
pub async fn due_from_redis(
    client: &redis::Client,
    keys: &RedisKeys,
    user_id: &str,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<DueOffer>> {
    // The script's SHA-1 is computed once, not per request.
    static SCRIPT_HASHED: std::sync::LazyLock<Script> =
        std::sync::LazyLock::new(|| Script::new(SCRIPT));
    let script = &*SCRIPT_HASHED;
    let mut invocation = script.prepare_invoke();
    invocation
        .key(keys.key(format!("due:{user_id}")))
        .key(keys.key(format!("offer:{user_id}")))
        .arg(millis(now))
        .arg(limit)
        .arg(keys.key("price:"));
    let raw: Vec<String> = crate::redis_sink::query(client, |mut conn| {
        let invocation = &invocation;
        async move { invocation.invoke_async(&mut conn).await }
    })
    .await?;
    let mut out = Vec::new();
    for chunk in raw.chunks_exact(4) {
        let Ok(offer) = serde_json::from_str::<Offer>(&chunk[2]) else {
            continue;
        };
        let price = serde_json::from_str::<Price>(&chunk[3]).ok();
        let due_at = from_millis(chunk[1].parse::<f64>().unwrap_or(0.0) as i64);
        let (unit_price, currency, available) = match &price {
            Some(p) => (p.unit_price, p.currency.clone(), p.available),
            None => (offer.last_unit_price, offer.currency.clone(), true),
        };
        out.push(DueOffer {
            reminder_id: chunk[0].clone(),
            text: say(
                &offer.title,
                offer.quantity,
                unit_price,
                &currency,
                available,
            ),
            sku: offer.sku,
            title: offer.title,
            quantity: offer.quantity,
            unit_price,
            currency,
            available,
            due_at,
        });
    }
    Ok(out)
}

/// Due offers from the relational read models (the fallback).
pub async fn due_from_relational(
    db: &ReadDb,
    user_id: &str,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<DueOffer>> {
    // The fallback is the last resort: while the store's breaker is open it would only
    // wait for the pool, so it answers at once.
    db.breaker().admit()?;
    let due = models::reminders::due_for_user(db, user_id, now, limit as i64).await?;
    let mut out = Vec::with_capacity(due.len());
    for r in due {
        let price = models::catalog::price(db, &r.sku).await?;
        let quantity = u32::try_from(r.quantity).unwrap_or(1);
        let (unit_price, currency, available) = match &price {
            Some(p) => (p.unit_price, p.currency.clone(), p.available),
            None => (r.last_unit_price, r.currency.clone(), true),
        };
        out.push(DueOffer {
            text: say(&r.title, quantity, unit_price, &currency, available),
            reminder_id: r.reminder_id,
            sku: r.sku,
            title: r.title,
            quantity,
            unit_price,
            currency,
            available,
            due_at: r.due_at,
        });
    }
    Ok(out)
}

/// The voice answer: Redis first, the relational model when Redis fails or is off.
pub async fn due_now(
    redis: Option<(&redis::Client, &RedisKeys)>,
    redis_budget: Option<std::time::Duration>,
    db: &ReadDb,
    user_id: &str,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<(Vec<DueOffer>, Source)> {
    if let Some((client, keys)) = redis {
        let answer = due_from_redis(client, keys, user_id, now, limit);
        let answer = match redis_budget {
            Some(budget) => tokio::time::timeout(budget, answer)
                .await
                .unwrap_or_else(|_| {
                    // Too short a wait for the breaker to count it as abandoned:
                    // have the server probed here (a frozen server opens it, and the
                    // voice route then answers from the relational model at once).
                    crate::redis_sink::breaker_for(client).suspect();
                    Err(crate::Error::Redis(redis::RedisError::from((
                        redis::ErrorKind::IoError,
                        "no answer within the voice route's Redis budget",
                    ))))
                }),
            None => answer.await,
        };
        match answer {
            Ok(offers) => return Ok((offers, Source::Redis)),
            Err(error) => {
                tracing::warn!(%error, degraded = true, "voice answer from the relational model: Redis failed")
            }
        }
    }
    Ok((
        due_from_relational(db, user_id, now, limit).await?,
        Source::Relational,
    ))
}
