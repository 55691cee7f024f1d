//! Hand-written parts of the OpenAPI document: the responses every authenticated route shares
//! (401, 403, 429 with `Retry-After`, 500), and the request schemas that JSON Schema can only
//! state with `oneOf` ("exactly one of `url` and `text`", "`target` or `voicemail: true`",
//! "`announcement` only with `start`"). The document must say exactly what the handlers
//! accept: a schema-valid body is never refused as malformed, a schema-invalid one always is.

use std::borrow::Cow;

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat,
    SchemaType, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{Modify, PartialSchema, ToSchema};

use crate::native::conferences::ConferenceEventView;
use crate::native::model::{CallEvent, Gap};

/// Largest value of a sequence number (`u64`).
pub(crate) const MAX_SEQ: u64 = u64::MAX;

pub(crate) fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn boolean() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Boolean)
}

/// `null` (or the property left out).
fn null(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Null)
        .description(Some(description))
}

fn nullable_string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
}

/// An object without other properties than the ones it names.
fn closed_object() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
}

/// A string that is one of `values`.
pub(crate) fn string_enum(values: &[&str], description: &str) -> Schema {
    string()
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .into()
}

/// `ErrorDetail.code`.
pub(crate) fn error_code() -> Schema {
    string_enum(
        &[
            "unauthorized",
            "forbidden",
            "not_found",
            "wrong_state",
            "sip_failed",
            "invalid_request",
            "conflict",
            "rate_limited",
            "node_unavailable",
            "node_timeout",
            "payload_too_large",
            "internal",
        ],
        "Machine-readable error code",
    )
}

/// A string that is one of `values`, or null.
pub(crate) fn nullable_string_enum(values: &[&str], description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
        .enum_values(Some(
            values
                .iter()
                .map(|v| serde_json::Value::from(*v))
                .chain([serde_json::Value::Null]),
        ))
        .description(Some(description))
        .into()
}

/// The park orbits (`*71`..`*79`), or null for the first free one.
pub(crate) fn orbit() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::String, Type::Null]))
        .enum_values(Some(
            (1..=9)
                .map(|n| serde_json::Value::from(format!("*7{n}")))
                .chain([serde_json::Value::Null]),
        ))
        .description(Some(
            "`*71` to `*79`; default (absent or null): the first free one",
        ))
        .into()
}

/// `after` / `Last-Event-ID`: a sequence number.
pub(crate) fn sequence(description: &str) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(0))
        .maximum(Some(MAX_SEQ as usize))
        .description(Some(description))
        .into()
}

/// Body of `POST /calls/{call_id}/announcements` (`leg` = true) and
/// `POST /calls/{call_id}/legs/{leg_id}/whisper` (`leg` = false: the leg is in the path).
fn audio_request(leg: bool) -> Schema {
    audio_request_for(
        "leg_id",
        leg.then_some("Play to this leg only (default: every party)"),
    )
}

/// An audio request whose optional target field is `target` (described by `described`;
/// None: not allowed, it is part of the path).
fn audio_request_for(target: &str, described: Option<&str>) -> Schema {
    let leg_id = || -> RefOr<Schema> {
        match described {
            Some(d) => nullable_string().description(Some(d)).into(),
            None => null("Not allowed: the leg is part of the path").into(),
        }
    };
    let voice = || {
        nullable_string().description(Some(
            "Text-to-speech voice (espeak-ng name, e.g. `en-us`); ignored with `url`",
        ))
    };
    let url = closed_object()
        .title(Some("url"))
        .property(
            "url",
            string().min_length(Some(1)).description(Some(
                "A WAV file (any sample rate and channel count, 8-32-bit) fetched by the \
                 server; unreachable or not a WAV: 400",
            )),
        )
        .required("url")
        .property("text", null("Not with `url`"))
        .property("voice", voice())
        .property(target, leg_id());
    let text = closed_object()
        .title(Some("text"))
        .property(
            "text",
            string()
                .pattern(Some("\\S"))
                .description(Some("Spoken by the built-in text-to-speech; not blank")),
        )
        .required("text")
        .property("url", null("Not with `text`"))
        .property("voice", voice())
        .property(target, leg_id());
    OneOfBuilder::new()
        .item(url)
        .item(text)
        .description(Some(
            "What to play: exactly one of `url` (a WAV) and `text` (text-to-speech)",
        ))
        .into()
}

/// Request body of `POST /calls/{call_id}/announcements`.
pub struct AudioRequestDoc;

impl PartialSchema for AudioRequestDoc {
    fn schema() -> RefOr<Schema> {
        audio_request(true).into()
    }
}

impl ToSchema for AudioRequestDoc {
    fn name() -> Cow<'static, str> {
        "AudioRequest".into()
    }
}

/// Request body of `POST /conferences/{name}/announcements`.
pub struct ConferenceAnnouncementDoc;

impl PartialSchema for ConferenceAnnouncementDoc {
    fn schema() -> RefOr<Schema> {
        audio_request_for(
            "participant_id",
            Some("Play to this participant only (default: into the mix, heard by all)"),
        )
        .into()
    }
}

impl ToSchema for ConferenceAnnouncementDoc {
    fn name() -> Cow<'static, str> {
        "ConferenceAnnouncement".into()
    }
}

/// Request body of `POST /calls/{call_id}/legs/{leg_id}/whisper`.
pub struct WhisperRequestDoc;

impl PartialSchema for WhisperRequestDoc {
    fn schema() -> RefOr<Schema> {
        audio_request(false).into()
    }
}

impl ToSchema for WhisperRequestDoc {
    fn name() -> Cow<'static, str> {
        "WhisperRequest".into()
    }
}

/// Request body of `POST /calls/{call_id}/forward`.
pub struct ForwardRequestDoc;

impl PartialSchema for ForwardRequestDoc {
    fn schema() -> RefOr<Schema> {
        let target = closed_object()
            .title(Some("target"))
            .property(
                "target",
                string().min_length(Some(1)).description(Some(
                    "An extension, a phone number or a `sip:`/`tel:` URI naming one",
                )),
            )
            .required("target")
            .property(
                "voicemail",
                boolean()
                    .enum_values(Some([false]))
                    .description(Some("Not with `target`")),
            );
        let voicemail = closed_object()
            .title(Some("voicemail"))
            .property(
                "voicemail",
                boolean()
                    .enum_values(Some([true]))
                    .description(Some("To the callee's mailbox")),
            )
            .required("voicemail")
            .property("target", null("Not with `voicemail`"));
        Schema::from(
            OneOfBuilder::new()
                .item(target)
                .item(voicemail)
                .description(Some(
                    "Where the ringing call goes: `target`, or `\"voicemail\": true`",
                )),
        )
        .into()
    }
}

impl ToSchema for ForwardRequestDoc {
    fn name() -> Cow<'static, str> {
        "ForwardRequest".into()
    }
}

/// Request body of `POST /calls/{call_id}/recording`.
pub struct RecordingRequestDoc;

impl PartialSchema for RecordingRequestDoc {
    fn schema() -> RefOr<Schema> {
        let start = closed_object()
            .title(Some("start"))
            .property(
                "action",
                string().enum_values(Some(["start"])).description(Some(
                    "Start a stereo recording (left: the caller's leg, right: the callee's)",
                )),
            )
            .required("action")
            .property(
                "announcement",
                boolean().description(Some(
                    "Every party first hears \"This call is being recorded.\" (default false)",
                )),
            );
        let other = closed_object()
            .title(Some("stop, pause, resume"))
            .property(
                "action",
                string()
                    .enum_values(Some(["stop", "pause", "resume"]))
                    .description(Some(
                        "`stop`: the file is complete; `pause`: silence is written until \
                         `resume` (the file keeps the call's timeline)",
                    )),
            )
            .required("action")
            .property(
                "announcement",
                boolean()
                    .enum_values(Some([false]))
                    .description(Some("Only with `start`")),
            );
        Schema::from(
            OneOfBuilder::new()
                .item(start)
                .item(other)
                .description(Some("What to do with the call's recording")),
        )
        .into()
    }
}

impl ToSchema for RecordingRequestDoc {
    fn name() -> Cow<'static, str> {
        "RecordingRequest".into()
    }
}

/// A WAV file as a request or response body.
pub struct WavBody;

impl PartialSchema for WavBody {
    fn schema() -> RefOr<Schema> {
        Schema::from(
            string()
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
                .content_media_type("audio/wav")
                .description(Some("A WAV file")),
        )
        .into()
    }
}

impl ToSchema for WavBody {
    fn name() -> Cow<'static, str> {
        "WavBody".into()
    }
}

/// The `data` of one Server-Sent Event of `GET /events`: a `CallEvent` (SSE `event` = its
/// `kind`, SSE `id` = its `seq`), or a `Gap` (SSE `event: gap`, no `id`).
pub struct StreamItemDoc;

impl PartialSchema for StreamItemDoc {
    fn schema() -> RefOr<Schema> {
        Schema::from(
            OneOfBuilder::new()
                .item(Ref::from_schema_name("CallEvent"))
                .item(Ref::from_schema_name("ConferenceEventView"))
                .item(Ref::from_schema_name("Gap"))
                .description(Some(
                    "The `data` of each event: a CallEvent or a ConferenceEventView \
                     (`event:` its kind, `id:` its seq) or, with `event: gap` and no `id`, a \
                     Gap. Comment lines (`:`) every 15 s keep the connection open.",
                )),
        )
        .into()
    }
}

impl ToSchema for StreamItemDoc {
    fn name() -> Cow<'static, str> {
        "StreamItem".into()
    }

    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        out.push((CallEvent::name().into(), CallEvent::schema()));
        CallEvent::schemas(out);
        out.push((
            ConferenceEventView::name().into(),
            ConferenceEventView::schema(),
        ));
        ConferenceEventView::schemas(out);
        out.push((Gap::name().into(), Gap::schema()));
        Gap::schemas(out);
    }
}

/// Adds the responses every authenticated operation can give — 401 (no or a wrong key), 403
/// (a credential that may not use this API), 429 (the password guessing defence; with
/// `Retry-After`), 500 (the database failed) — to each operation that does not describe them
/// itself, as references to shared responses.
pub(crate) struct CommonResponses;

const COMMON: [(&str, &str); 4] = [
    ("401", "Unauthorized"),
    ("403", "Forbidden"),
    ("429", "RateLimited"),
    ("500", "InternalError"),
];

fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    )
}

/// `Retry-After` of a 429.
pub(crate) fn retry_after() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
        ))
        .description(Some(
            "Seconds until the source or identity may try again (sent when the password \
             guessing defence refused the request)",
        ))
        .build()
}

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.responses.insert(
            "Unauthorized".into(),
            error_response("`unauthorized`: no API key, or not a valid one")
                .header(
                    "WWW-Authenticate",
                    HeaderBuilder::new()
                        .schema(Some(string()))
                        .description(Some("`Bearer realm=\"hookflash\"`"))
                        .build(),
                )
                .build()
                .into(),
        );
        components.responses.insert(
            "Forbidden".into(),
            error_response(
                "`forbidden`: a valid credential that may not use this API (a sipgate user token)",
            )
            .build()
            .into(),
        );
        components.responses.insert(
            "RateLimited".into(),
            error_response(
                "`rate_limited`: too many failed authentication attempts from this source or \
                 for this key; retry after `Retry-After` seconds",
            )
            .header("Retry-After", retry_after())
            .build()
            .into(),
        );
        components.responses.insert(
            "InternalError".into(),
            error_response("`internal`: the server's database or file system failed")
                .build()
                .into(),
        );
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                if is_public(op) {
                    continue;
                }
                for (status, name) in COMMON {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| Ref::from_response_name(name).into());
                }
            }
        }
    }
}

/// An operation with `security: [{}]` (no credentials needed).
fn is_public(op: &utoipa::openapi::path::Operation) -> bool {
    op.security.as_ref().is_some_and(|reqs| {
        !reqs.is_empty()
            && reqs.iter().all(|r| {
                serde_json::to_value(r)
                    .map(|v| v == serde_json::json!({}))
                    .unwrap_or(false)
            })
    })
}
