//! sipgate history: `GET /v2/history` and `GET /v2/{userId}/history` — the token user's
//! finished calls as `CALL` entries `{items, totalCount}`, in the shape the sipgateio history
//! module reads (ISO-8601 dates, which the SDK turns into `Date`s), each with its recordings
//! `[{id, url}]`; and `GET /v2/recordings/{id}`, where those URLs point (the WAV, same
//! credentials).
//!
//! Query (arrays as repeated keys, `types=CALL&types=SMS`; `types[]=` is accepted too):
//! `types` (`CALL` `VOICEMAIL` `SMS` `FAX`; only calls exist here), `directions` (`INCOMING`
//! `OUTGOING` `MISSED_INCOMING` `MISSED_OUTGOING`), `from` / `to` (ISO-8601 start-time window),
//! `archived`, `starred` (nothing here is archived or starred), `limit` (1-1000, default 50),
//! `offset`. Other keys are ignored. Bad values are a 400.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::Response;
use axum::Json;
use hookflash_engine::{CallDirection, EndCause};
use hookflash_store::{CallRecord, UserCallFilter};
use serde::Serialize;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};
use tracing::debug;

use super::SipgateState;
use crate::sipgate::auth::SipgateUser;
use crate::sipgate::error::SipgateError;
use crate::sipgate::numbers::with_plus;

type Result<T> = std::result::Result<T, SipgateError>;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    pub items: Vec<CallEntry>,
    pub total_count: i64,
}

#[derive(Debug, Serialize)]
pub struct RecordingRef {
    pub id: String,
    /// Absolute URL of the WAV on this server (`/v2/recordings/{id}`, same credentials).
    pub url: String,
}

#[derive(Debug, Serialize)]
pub struct Endpoint {
    pub extension: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
pub struct RoutedEndpoint {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub endpoint: Endpoint,
}

/// A `CALL` history entry (sipgateio `CallHistoryEntry`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallEntry {
    pub id: String,
    pub source: String,
    pub target: String,
    pub source_alias: String,
    pub target_alias: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub created: String,
    pub last_modified: String,
    /// `INCOMING`, `OUTGOING`, `MISSED_INCOMING`, `MISSED_OUTGOING` (the user's view).
    pub direction: &'static str,
    pub incoming: bool,
    /// `PICKUP`, `NOPICKUP` or `BUSY`.
    pub status: &'static str,
    pub connection_ids: Vec<String>,
    pub read: bool,
    pub archived: bool,
    pub note: String,
    pub endpoints: Vec<RoutedEndpoint>,
    pub starred: bool,
    pub labels: Vec<String>,
    pub call_id: String,
    /// The first recording's URL (sipgate's `recordingUrl`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_url: Option<String>,
    pub recordings: Vec<RecordingRef>,
    /// Seconds from answer to hang-up (0 when unanswered).
    pub duration: i64,
    /// `SUCCESS`, `MISSED`, `BUSY`, `REJECTED` or `FAILURE`.
    pub call_status: &'static str,
}

/// The parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Query {
    /// False when `types` excludes `CALL` (or asks for archived/starred entries): nothing.
    calls: bool,
    directions: Option<[bool; 4]>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    limit: i64,
    offset: i64,
}

fn bad(what: &str) -> SipgateError {
    SipgateError::BadRequest(format!("Invalid filter or pagination input: {what}"))
}

fn parse_query(raw: Option<&str>) -> Result<Query> {
    let pairs: Vec<(String, String)> = match raw {
        None | Some("") => Vec::new(),
        Some(q) => serde_urlencoded::from_str(q).map_err(|_| bad("malformed query"))?,
    };
    let mut q = Query {
        calls: true,
        directions: None,
        from_ms: None,
        to_ms: None,
        limit: DEFAULT_LIMIT,
        offset: 0,
    };
    let mut types: Option<Vec<String>> = None;
    for (k, v) in &pairs {
        let key = k.strip_suffix("[]").unwrap_or(k);
        match key {
            "types" => {
                if !["CALL", "VOICEMAIL", "SMS", "FAX"].contains(&v.as_str()) {
                    return Err(bad(&format!("unknown type {v}")));
                }
                types.get_or_insert_with(Vec::new).push(v.clone());
            }
            "directions" => {
                let i = ["INCOMING", "OUTGOING", "MISSED_INCOMING", "MISSED_OUTGOING"]
                    .iter()
                    .position(|d| d == v)
                    .ok_or_else(|| bad(&format!("unknown direction {v}")))?;
                q.directions.get_or_insert([false; 4])[i] = true;
            }
            "from" => q.from_ms = Some(parse_iso(v).ok_or_else(|| bad("from is not a date"))?),
            "to" => q.to_ms = Some(parse_iso(v).ok_or_else(|| bad("to is not a date"))?),
            "limit" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(&format!("limit must be 1-{MAX_LIMIT}")))?
            }
            "offset" => {
                q.offset = v
                    .parse()
                    .ok()
                    .filter(|n: &i64| *n >= 0)
                    .ok_or_else(|| bad("offset must be 0 or more"))?
            }
            "archived" => match v.as_str() {
                "true" => q.calls = false,
                "false" => {}
                _ => return Err(bad("archived must be true or false")),
            },
            "starred" => match v.as_str() {
                "STARRED" | "true" => q.calls = false,
                "UNSTARRED" | "false" => {}
                _ => return Err(bad("starred must be STARRED or UNSTARRED")),
            },
            _ => {}
        }
    }
    if let Some(t) = types {
        q.calls &= t.iter().any(|t| t == "CALL");
    }
    Ok(q)
}

/// `GET /v2/history`: the token user's history.
pub(crate) async fn history(
    State(state): State<SipgateState>,
    auth: SipgateUser,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<HistoryPage>> {
    page(&state, &auth, &headers, query.as_deref()).await
}

/// `GET /v2/{userId}/history`: the same, for the token user's own id (their extension or
/// user id); another user's history is a 403.
pub(crate) async fn user_history(
    State(state): State<SipgateState>,
    auth: SipgateUser,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<HistoryPage>> {
    if user_id != auth.user.extension && user_id != auth.user.id {
        return Err(SipgateError::Forbidden(format!(
            "User {} may only read their own history",
            auth.user.extension
        )));
    }
    page(&state, &auth, &headers, query.as_deref()).await
}

/// `http(s)://<Host>` of the request, for absolute recording URLs.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .unwrap_or("localhost");
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!("{}://{host}", if https { "https" } else { "http" })
}

async fn page(
    state: &SipgateState,
    auth: &SipgateUser,
    headers: &HeaderMap,
    raw: Option<&str>,
) -> Result<Json<HistoryPage>> {
    let q = parse_query(raw)?;
    if !q.calls {
        return Ok(Json(HistoryPage {
            items: Vec::new(),
            total_count: 0,
        }));
    }
    let store = state.engine.store();
    let account = &auth.account.id;
    let ext = &auth.user.extension;
    let mut filter = UserCallFilter::all(account, ext, q.limit, q.offset);
    if let Some([incoming, outgoing, missed_incoming, missed_outgoing]) = q.directions {
        filter.incoming = incoming;
        filter.outgoing = outgoing;
        filter.missed_incoming = missed_incoming;
        filter.missed_outgoing = missed_outgoing;
    }
    filter.from_ms = q.from_ms;
    filter.to_ms = q.to_ms;
    let (calls, total) = store.user_calls(&filter).await?;
    let parties = Parties::load(state, account).await?;
    let base = base_url(headers);
    let mut items = Vec::with_capacity(calls.len());
    for call in &calls {
        let recordings = store
            .recordings(account, Some(&call.id), 100)
            .await?
            .into_iter()
            .filter(|r| r.state == "complete" || r.state == "repaired")
            .rev() // oldest first
            .map(|r| RecordingRef {
                url: format!("{base}/v2/recordings/{}", r.id),
                id: r.id,
            })
            .collect();
        items.push(entry(call, ext, &parties, recordings));
    }
    debug!(user = %ext, total, returned = items.len(), "sipgate history");
    Ok(Json(HistoryPage {
        items,
        total_count: total,
    }))
}

/// The account's users by extension: (display name, first DID).
struct Parties {
    users: HashMap<String, (Option<String>, Option<String>)>,
}

impl Parties {
    async fn load(state: &SipgateState, account: &str) -> Result<Parties> {
        let store = state.engine.store();
        let dids = crate::sipgate::numbers::dids(&store.numbers(account).await?);
        let users = store
            .users(account)
            .await?
            .into_iter()
            .map(|u| {
                let did = dids.get(&u.id).cloned();
                (u.extension, (u.display_name, did))
            })
            .collect();
        Ok(Parties { users })
    }

    /// (number as sipgate shows it, alias) of a party: a user shows their DID (else the
    /// extension) and their name; anybody else their number.
    fn render(&self, raw: &str, is_user_side: bool) -> (String, String) {
        match self.users.get(raw).filter(|_| is_user_side) {
            Some((name, did)) => (
                did.clone().unwrap_or_else(|| raw.to_string()),
                name.clone().unwrap_or_default(),
            ),
            None => (with_plus(raw), String::new()),
        }
    }
}

fn entry(
    call: &CallRecord,
    ext: &str,
    parties: &Parties,
    recordings: Vec<RecordingRef>,
) -> CallEntry {
    // The record stores the engine's words; one it does not know names neither side a user.
    let (caller_is_user, callee_is_user) = match CallDirection::parse(&call.direction) {
        Some(CallDirection::Internal) => (true, true),
        Some(CallDirection::Outbound) => (true, false),
        Some(CallDirection::Inbound) => (false, true),
        None => (false, false),
    };
    let outgoing = caller_is_user && call.from == ext;
    let answered = call.answered_at.is_some();
    let direction = match (outgoing, answered) {
        (true, true) => "OUTGOING",
        (true, false) => "MISSED_OUTGOING",
        (false, true) => "INCOMING",
        (false, false) => "MISSED_INCOMING",
    };
    let (status, call_status) = if answered {
        ("PICKUP", "SUCCESS")
    } else {
        unanswered_status(EndCause::parse(&call.end_cause))
    };
    let (source, source_alias) = parties.render(&call.from, caller_is_user);
    let (target, target_alias) = parties.render(&call.to, callee_is_user);
    CallEntry {
        id: call.id.clone(),
        source,
        target,
        source_alias,
        target_alias,
        kind: "CALL",
        created: iso(call.started_at),
        last_modified: iso(call.ended_at),
        direction,
        incoming: !outgoing,
        status,
        connection_ids: vec![ext.to_string()],
        read: true,
        archived: false,
        note: String::new(),
        endpoints: vec![RoutedEndpoint {
            kind: "ROUTED",
            endpoint: Endpoint {
                extension: ext.to_string(),
                kind: "USER",
            },
        }],
        starred: false,
        labels: Vec::new(),
        call_id: call.id.clone(),
        recording_url: recordings.first().map(|r| r.url.clone()),
        recordings,
        duration: (call.duration_ms + 500) / 1000,
        call_status,
    }
}

/// (`status`, `callStatus`) of a call nobody answered, by why it ended (None: a word the
/// engine does not produce).
fn unanswered_status(cause: Option<EndCause>) -> (&'static str, &'static str) {
    let Some(cause) = cause else {
        return ("NOPICKUP", "FAILURE");
    };
    match cause {
        EndCause::Busy => ("BUSY", "BUSY"),
        EndCause::Rejected => ("NOPICKUP", "REJECTED"),
        EndCause::Cancel | EndCause::NoAnswer | EndCause::Unavailable => ("NOPICKUP", "MISSED"),
        EndCause::Normal
        | EndCause::Api
        | EndCause::Shutdown
        | EndCause::NotFound
        | EndCause::Incompatible
        | EndCause::Failed
        | EndCause::AckTimeout
        | EndCause::RtpTimeout
        | EndCause::SessionExpired
        | EndCause::ParkTimeout
        | EndCause::Replaced
        | EndCause::TransferFailed
        | EndCause::Parked
        | EndCause::Transferred
        | EndCause::Crash
        | EndCause::NodeFailure => ("NOPICKUP", "FAILURE"),
    }
}

/// `GET /v2/recordings/{id}`: the WAV of a recording of one of the token user's calls (a
/// call they are on, or one in their history); anything else is a 404.
pub(crate) async fn recording_audio(
    State(state): State<SipgateState>,
    auth: SipgateUser,
    Path(id): Path<String>,
) -> Result<Response> {
    let not_found = || SipgateError::NotFound("The requested recording could not be found".into());
    let store = state.engine.store();
    let rec = store
        .recording(&auth.account.id, &id)
        .await?
        .ok_or_else(not_found)?;
    let on_live_call = state
        .engine
        .call(&auth.account.id, &rec.call_id)
        .map(|c| {
            c.legs
                .iter()
                .any(|l| l.owner_user_id.as_deref() == Some(auth.user.id.as_str()))
        })
        .unwrap_or(false);
    if !on_live_call
        && !store
            .user_was_on_call(&auth.account.id, &auth.user.extension, &rec.call_id)
            .await?
    {
        return Err(not_found());
    }
    Ok(crate::wav::response(&rec).await?)
}

/// How the dialect writes dates: UTC with milliseconds, `2024-05-01T12:34:56.789Z` (what
/// JavaScript's `Date.toISOString` gives and the SDK turns back into `Date`s).
const WIRE_DATE: &[BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
/// The date of a query date-time (`2024-05-01`; leading zeros may be left out).
const QUERY_DATE: &[BorrowedFormatItem<'_>] =
    format_description!("[year padding:none]-[month padding:none]-[day padding:none]");
/// Its clock: `12:34`, `12:34:56`, `12:34:56.789` (any fraction down to nanoseconds).
const QUERY_CLOCK: &[BorrowedFormatItem<'_>] = format_description!(
    version = 2,
    "[hour padding:none]:[minute padding:none][optional [:[second padding:none][optional [.[subsecond]]]]]"
);
/// Its zone offset: `+02:00` or `+0200`.
const QUERY_OFFSET: &[BorrowedFormatItem<'_>] = format_description!(
    version = 2,
    "[offset_hour sign:mandatory][optional [:]][offset_minute]"
);

/// Unix milliseconds as ISO-8601 UTC: `2024-05-01T12:34:56.789Z`. Instants beyond the years
/// -9999 to 9999 are written as the nearest of the two.
pub(crate) fn iso(ms: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(
        if ms < 0 {
            PrimitiveDateTime::MIN.assume_utc()
        } else {
            PrimitiveDateTime::MAX.assume_utc()
        },
    );
    // Every component the description names is in an `OffsetDateTime`: this cannot fail.
    t.format(WIRE_DATE).unwrap_or_default()
}

/// ISO-8601 date or date-time (`2024-05-01`, `2024-05-01T12:34[:56[.789]]` with `Z`, `±HH:MM`,
/// `±HHMM` or nothing for UTC) as Unix milliseconds.
pub(crate) fn parse_iso(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, clock) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let date = Date::parse(date, QUERY_DATE).ok()?;
    let Some(clock) = clock else {
        return Some(unix_ms(date.midnight().assume_utc()));
    };
    // Split off the zone: 'Z', or the last '+'/'-' (a '+' may arrive decoded as ' ').
    let (clock, offset) = if let Some(c) = clock.strip_suffix(['Z', 'z']) {
        (c, UtcOffset::UTC)
    } else if let Some(i) = clock.rfind(['+', '-', ' ']) {
        let (c, zone) = clock.split_at(i);
        let zone = match zone.strip_prefix(' ') {
            Some(rest) => format!("+{rest}"),
            None => zone.to_string(),
        };
        (c, UtcOffset::parse(&zone, QUERY_OFFSET).ok()?)
    } else {
        (clock, UtcOffset::UTC)
    };
    let time = Time::parse(clock, QUERY_CLOCK).ok()?;
    Some(unix_ms(
        PrimitiveDateTime::new(date, time).assume_offset(offset),
    ))
}

/// Unix milliseconds of an instant (rounded down, as the fraction's first three digits).
fn unix_ms(t: OffsetDateTime) -> i64 {
    // Years -9999..=9999 are about ±3.2e14 ms: always within an i64.
    t.unix_timestamp_nanos().div_euclid(1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanswered_calls_are_classified_by_cause() {
        // Every engine cause, as the call record stores it.
        let expected: &[(&str, (&str, &str))] = &[
            ("normal", ("NOPICKUP", "FAILURE")),
            ("api", ("NOPICKUP", "FAILURE")),
            ("shutdown", ("NOPICKUP", "FAILURE")),
            ("cancel", ("NOPICKUP", "MISSED")),
            ("busy", ("BUSY", "BUSY")),
            ("rejected", ("NOPICKUP", "REJECTED")),
            ("not_found", ("NOPICKUP", "FAILURE")),
            ("unavailable", ("NOPICKUP", "MISSED")),
            ("no_answer", ("NOPICKUP", "MISSED")),
            ("incompatible", ("NOPICKUP", "FAILURE")),
            ("failed", ("NOPICKUP", "FAILURE")),
            ("ack_timeout", ("NOPICKUP", "FAILURE")),
            ("rtp_timeout", ("NOPICKUP", "FAILURE")),
            ("session_expired", ("NOPICKUP", "FAILURE")),
            ("park_timeout", ("NOPICKUP", "FAILURE")),
            ("replaced", ("NOPICKUP", "FAILURE")),
            ("transfer_failed", ("NOPICKUP", "FAILURE")),
            ("parked", ("NOPICKUP", "FAILURE")),
            ("transferred", ("NOPICKUP", "FAILURE")),
            ("crash", ("NOPICKUP", "FAILURE")),
            ("node_failure", ("NOPICKUP", "FAILURE")),
        ];
        let listed: Vec<&str> = expected.iter().map(|(c, _)| *c).collect();
        let all: Vec<&str> = EndCause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, all);
        for (word, want) in expected {
            assert_eq!(unanswered_status(EndCause::parse(word)), *want, "{word}");
        }
        assert_eq!(
            unanswered_status(EndCause::parse("something old")),
            ("NOPICKUP", "FAILURE")
        );
    }

    #[test]
    fn iso_dates_round_trip_and_parse_sdk_forms() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_714_566_896_789), "2024-05-01T12:34:56.789Z");
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso(-1), "1969-12-31T23:59:59.999Z");
        for ms in [0, 1_714_566_896_789, 951_782_400_000, 4_102_444_800_000] {
            assert_eq!(parse_iso(&iso(ms)), Some(ms));
        }
        assert_eq!(parse_iso("2024-05-01"), Some(1_714_521_600_000));
        assert_eq!(
            parse_iso("2024-05-01T14:34:56+02:00"),
            Some(1_714_566_896_000)
        );
        assert_eq!(
            parse_iso("2024-05-01T14:34:56 0200"),
            Some(1_714_566_896_000)
        );
        assert_eq!(
            parse_iso("2024-05-01T10:34:56.7-02:00"),
            Some(1_714_566_896_700)
        );
        assert_eq!(parse_iso("2024-05-01T12:34"), Some(1_714_566_840_000));
        assert_eq!(parse_iso(" 2024-5-1t12:34z "), Some(1_714_566_840_000));
        assert_eq!(
            parse_iso("2024-05-01 12:34:56.789999+0000"),
            Some(1_714_566_896_789),
            "fractions are cut to milliseconds"
        );
        assert_eq!(parse_iso("1969-12-31T23:59:59.9999Z"), Some(-1));
        // The ends of what can be written.
        assert_eq!(iso(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(parse_iso(&iso(i64::MAX)), Some(253_402_300_799_999));
        assert_eq!(iso(i64::MIN), iso(parse_iso("-9999-01-01").unwrap()));
        for bad in [
            "",
            "x",
            "2024-13-01",
            "2024-02-30",
            "2024-05-01T25:00",
            "2024-05-01T12:60",
            "2024-05-01T12:34:56.x",
            "2024-05-01T12:34:56.",
            "2024-05",
            "2024-05-01T12",
            "2024-05-01T12:34+2",
            "2024-05-01T12:34+26:00",
            "2024-05-01T12:34:56Zx",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
    }

    #[test]
    fn queries_parse_like_the_sdk_sends_them() {
        let q = parse_query(Some("types=CALL&types=SMS&limit=5&offset=10")).unwrap();
        assert!(q.calls);
        assert_eq!((q.limit, q.offset), (5, 10));
        assert!(!parse_query(Some("types=SMS")).unwrap().calls);
        assert!(!parse_query(Some("archived=true")).unwrap().calls);
        assert!(parse_query(Some("types%5B%5D=CALL")).unwrap().calls);
        let q = parse_query(Some("directions=INCOMING&directions=MISSED_OUTGOING")).unwrap();
        assert_eq!(q.directions, Some([true, false, false, true]));
        let q = parse_query(Some("from=2024-05-01T00%3A00%3A00.000Z")).unwrap();
        assert_eq!(q.from_ms, Some(1_714_521_600_000));
        assert_eq!(parse_query(None).unwrap().limit, DEFAULT_LIMIT);
        for bad in [
            "types=CALLS",
            "limit=0",
            "limit=x",
            "offset=-1",
            "directions=UP",
            "from=yesterday",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
