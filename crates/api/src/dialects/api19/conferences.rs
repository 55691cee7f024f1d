//! RestComm conferences: `Conferences(.json)` (list), `Conferences/{Sid}` (one),
//! `Conferences/{Sid}/Participants(.json)` (the calls in it) and
//! `Conferences/{Sid}/Participants/{CallSid}` (get; POST `Mute=true|false`). The conference
//! Sid is `CF` + the conference's id (`hookflash_apps::rcml::sids`); only the account's
//! running conferences exist. Participants are the calls brought in (a phone the conference
//! dialled has no CallSid and is not listed).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::response::Response;
use hookflash_apps::rcml::sids;
use hookflash_engine::{ConferenceInfo, ParticipantInfo};
use serde::Serialize;

use super::calls::base_of;
use super::error::Api19Error;
use super::render::{self, Format};
use super::{Api19Account, Api19State};

type Result<T> = std::result::Result<T, Api19Error>;

const API_VERSION: &str = "2012-04-24";

#[derive(Debug, Clone, Serialize)]
pub struct ConferenceUris {
    pub participants: String,
}

/// RestComm's conference resource.
#[derive(Debug, Clone, Serialize)]
pub struct ConferenceResource {
    pub sid: String,
    pub date_created: String,
    pub date_updated: String,
    pub account_sid: String,
    /// `RUNNING_MODERATOR_PRESENT`, or `RUNNING_MODERATOR_ABSENT` while its participants
    /// wait for one that starts it.
    pub status: &'static str,
    pub friendly_name: String,
    pub api_version: &'static str,
    pub uri: String,
    pub subresource_uris: ConferenceUris,
}

/// RestComm's participant resource.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantResource {
    pub call_sid: String,
    pub conference_sid: String,
    pub date_created: String,
    pub date_updated: String,
    pub account_sid: String,
    pub muted: bool,
    pub hold: bool,
    pub uri: String,
}

fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn strip_json(s: &str) -> &str {
    s.strip_suffix(".json").unwrap_or(s)
}

fn conference_resource(acct: &Api19Account, base: &str, c: &ConferenceInfo) -> ConferenceResource {
    let sid = sids::conference_sid(&c.id);
    let uri = format!("{base}/Accounts/{}/Conferences/{sid}", acct.account_sid);
    let waiting = c.participants.iter().all(|p| p.waiting);
    ConferenceResource {
        sid,
        date_created: iso(c.created_at_ms),
        date_updated: iso(c.created_at_ms),
        account_sid: acct.account_sid.clone(),
        status: if waiting {
            "RUNNING_MODERATOR_ABSENT"
        } else {
            "RUNNING_MODERATOR_PRESENT"
        },
        friendly_name: c.name.clone(),
        api_version: API_VERSION,
        subresource_uris: ConferenceUris {
            participants: format!("{uri}/Participants"),
        },
        uri,
    }
}

fn participant_resource(
    acct: &Api19Account,
    base: &str,
    c: &ConferenceInfo,
    p: &ParticipantInfo,
) -> Option<ParticipantResource> {
    let leg = p.leg_id.as_deref()?;
    let conference_sid = sids::conference_sid(&c.id);
    let call_sid = sids::call_sid(leg);
    let at = iso(p.joined_at_ms.unwrap_or(c.created_at_ms));
    Some(ParticipantResource {
        uri: format!(
            "{base}/Accounts/{}/Conferences/{conference_sid}/Participants/{call_sid}",
            acct.account_sid
        ),
        call_sid,
        conference_sid,
        date_created: at.clone(),
        date_updated: at,
        account_sid: acct.account_sid.clone(),
        muted: p.muted,
        hold: p.held,
    })
}

/// The account's running conference `sid` names.
async fn find(state: &Api19State, acct: &Api19Account, sid: &str) -> Result<ConferenceInfo> {
    let id = sids::conference_id(strip_json(sid)).ok_or_else(|| {
        Api19Error::NotFound("no such conference: conferences exist while they run".into())
    })?;
    state
        .engine
        .conferences(&acct.account_id)
        .await
        .into_iter()
        .find(|c| c.id.eq_ignore_ascii_case(&id))
        .ok_or_else(|| {
            Api19Error::NotFound("no such conference: conferences exist while they run".into())
        })
}

#[derive(Debug, Clone, Serialize)]
struct List<T: Serialize> {
    page: usize,
    num_pages: usize,
    page_size: usize,
    total: usize,
    start: usize,
    end: usize,
    uri: String,
    #[serde(flatten)]
    items: T,
}

#[derive(Debug, Clone, Serialize)]
struct Conferences {
    conferences: Vec<ConferenceResource>,
}

#[derive(Debug, Clone, Serialize)]
struct Participants {
    participants: Vec<ParticipantResource>,
}

fn list<T: Serialize>(uri: &str, total: usize, items: T) -> List<T> {
    List {
        page: 0,
        num_pages: 1,
        page_size: total.max(1),
        total,
        start: 0,
        end: total.saturating_sub(1),
        uri: uri.to_string(),
        items,
    }
}

/// `GET .../Conferences(.json)`
pub(crate) async fn list_conferences(
    State(state): State<Api19State>,
    acct: Api19Account,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let format = Format::of_path(uri.path());
    let base = base_of(uri.path());
    let all: Vec<ConferenceResource> = state
        .engine
        .conferences(&acct.account_id)
        .await
        .iter()
        .map(|c| conference_resource(&acct, base, c))
        .collect();
    let page = list(uri.path(), all.len(), Conferences { conferences: all });
    render::resource(
        format,
        "Conferences",
        "Conference",
        &page,
        &page.items.conferences,
    )
}

/// `GET .../Conferences/{Sid}(.json)`
pub(crate) async fn get_conference(
    State(state): State<Api19State>,
    acct: Api19Account,
    OriginalUri(uri): OriginalUri,
    Path((_, sid)): Path<(String, String)>,
) -> Response {
    let format = Format::of_path(uri.path());
    match find(&state, &acct, &sid).await {
        Ok(c) => render::one(
            format,
            "Conference",
            &conference_resource(&acct, base_of(uri.path()), &c),
        ),
        Err(e) => e.render(format),
    }
}

/// `GET .../Conferences/{Sid}/Participants(.json)`
pub(crate) async fn list_participants(
    State(state): State<Api19State>,
    acct: Api19Account,
    OriginalUri(uri): OriginalUri,
    Path((_, sid)): Path<(String, String)>,
) -> Response {
    let format = Format::of_path(uri.path());
    let base = base_of(uri.path());
    match find(&state, &acct, &sid).await {
        Ok(c) => {
            let all: Vec<ParticipantResource> = c
                .participants
                .iter()
                .filter_map(|p| participant_resource(&acct, base, &c, p))
                .collect();
            let page = list(uri.path(), all.len(), Participants { participants: all });
            render::resource(
                format,
                "Participants",
                "Participant",
                &page,
                &page.items.participants,
            )
        }
        Err(e) => e.render(format),
    }
}

async fn participant_inner(
    state: &Api19State,
    acct: &Api19Account,
    base: &str,
    sid: &str,
    call_sid: &str,
    body: Option<Bytes>,
) -> Result<ParticipantResource> {
    let c = find(state, acct, sid).await?;
    let leg = sids::leg_id(strip_json(call_sid))
        .ok_or_else(|| Api19Error::NotFound("no such participant".into()))?;
    let p = c
        .participants
        .iter()
        .find(|p| {
            p.leg_id
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case(&leg))
        })
        .ok_or_else(|| Api19Error::NotFound("no such participant".into()))?;
    let Some(body) = body else {
        return participant_resource(acct, base, &c, p)
            .ok_or_else(|| Api19Error::NotFound("no such participant".into()));
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|e| Api19Error::bad(format!("the body is not form-encoded: {e}")))?;
    let f: HashMap<String, String> = pairs.into_iter().collect();
    let muted = match f
        .get("Mute")
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("true") => true,
        Some("false") => false,
        Some(v) => return Err(Api19Error::bad(format!("Mute {v:?} is not true or false"))),
        None => return Err(Api19Error::bad("nothing to modify: send Mute")),
    };
    let call_id = p
        .call_id
        .clone()
        .ok_or_else(|| Api19Error::NotFound("no such participant".into()))?;
    let now = state
        .engine
        .conference_mute_call(&acct.account_id, &call_id, p.leg_id.as_deref(), muted)
        .await?;
    participant_resource(acct, base, &c, &now)
        .ok_or_else(|| Api19Error::NotFound("no such participant".into()))
}

/// `GET .../Conferences/{Sid}/Participants/{CallSid}(.json)`
pub(crate) async fn get_participant(
    State(state): State<Api19State>,
    acct: Api19Account,
    OriginalUri(uri): OriginalUri,
    Path((_, sid, call_sid)): Path<(String, String, String)>,
) -> Response {
    let format = Format::of_path(uri.path());
    match participant_inner(&state, &acct, base_of(uri.path()), &sid, &call_sid, None).await {
        Ok(p) => render::one(format, "Participant", &p),
        Err(e) => e.render(format),
    }
}

/// `POST .../Conferences/{Sid}/Participants/{CallSid}(.json)` with `Mute=true|false`.
pub(crate) async fn modify_participant(
    State(state): State<Api19State>,
    acct: Api19Account,
    OriginalUri(uri): OriginalUri,
    Path((_, sid, call_sid)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let format = Format::of_path(uri.path());
    match participant_inner(
        &state,
        &acct,
        base_of(uri.path()),
        &sid,
        &call_sid,
        Some(body),
    )
    .await
    {
        Ok(p) => render::one(format, "Participant", &p),
        Err(e) => e.render(format),
    }
}
