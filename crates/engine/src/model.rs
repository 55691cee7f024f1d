//! The call vocabulary every API dialect maps: call and leg states, directions, leg roles, end
//! causes and the reasons a command meets the wrong state. Each is a closed enum whose
//! `as_str()` is the engine's wire word (what the native API shows, what call records store,
//! the metrics' label values), serialized as that word. Dialects translate them with an
//! exhaustive `match` (no `_` arm), so a new variant is a compile error in each of them.

use std::fmt;

/// Defines a closed vocabulary: the enum, its wire words (`as_str`, `parse`, `ALL`), `Display`
/// and a `Serialize` that writes the word. Every variant names its word, so `as_str` and
/// `parse` cannot miss one.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The engine's wire word.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $wire, )+
                }
            }

            /// The variant whose wire word is `s` (None for anything else, e.g. a word an
            /// older version stored).
            pub fn parse(s: &str) -> Option<$name> {
                match s {
                    $( $wire => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::model::UnknownWord;
            fn from_str(s: &str) -> Result<$name, Self::Err> {
                $name::parse(s).ok_or_else(|| $crate::model::UnknownWord {
                    vocabulary: stringify!($name),
                    word: s.to_string(),
                })
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        // Read back from the cluster bus (docs/architecture.md "The bus").
        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let word = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(d)?;
                $name::parse(&word).ok_or_else(|| {
                    <D::Error as ::serde::de::Error>::unknown_variant(&word, &[$($wire,)+])
                })
            }
        }
    };
}
pub(crate) use wire_enum;

/// A word that names no variant of a vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWord {
    pub vocabulary: &'static str,
    pub word: String,
}

impl fmt::Display for UnknownWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{}' is not a {}", self.word, self.vocabulary)
    }
}

impl std::error::Error for UnknownWord {}

wire_enum! {
    /// Where a call is in its life.
    pub enum CallState {
        Ringing => "ringing",
        Answered => "answered",
        Ended => "ended",
    }
}

wire_enum! {
    /// Where a leg is in its life (the states RingCentral and jambonz expose, in our words).
    pub enum LegState {
        Setup => "setup",
        Proceeding => "proceeding",
        Ringing => "ringing",
        Answered => "answered",
        Held => "held",
        Disconnected => "disconnected",
    }
}

wire_enum! {
    /// Where a call comes from and goes to, seen from the account.
    pub enum CallDirection {
        /// Between two of the account's users.
        Internal => "internal",
        /// From outside (a trunk) to one of the account's users.
        Inbound => "inbound",
        /// From the account out through its trunk.
        Outbound => "outbound",
    }
}

wire_enum! {
    /// Who set up a leg's dialog.
    pub enum LegDirection {
        /// The phone called us (we are UAS).
        In => "in",
        /// We called the phone (we are UAC).
        Out => "out",
    }
}

wire_enum! {
    /// A live leg's part in the call.
    pub enum LegRole {
        /// The leg of the party that placed the call.
        Caller => "caller",
        /// The leg of the party called.
        Callee => "callee",
    }
}

wire_enum! {
    /// A call-record leg's part in the call: a live leg's role, or a transfer attempt.
    pub enum RecordRole {
        Caller => "caller",
        Callee => "callee",
        /// An INVITE to a transfer target.
        Transfer => "transfer",
    }
}

impl From<LegRole> for RecordRole {
    fn from(role: LegRole) -> RecordRole {
        match role {
            LegRole::Caller => RecordRole::Caller,
            LegRole::Callee => RecordRole::Callee,
        }
    }
}

wire_enum! {
    /// Why a call (or one leg of it) ended; `transfer_failed` events carry one too (why the
    /// target was not reached).
    pub enum EndCause {
        /// A party hung up (BYE), or the call ended the ordinary way.
        Normal => "normal",
        /// Hung up through an API.
        Api => "api",
        /// The server shut down.
        Shutdown => "shutdown",
        /// The caller cancelled while it rang (or a fork was cancelled: 487).
        Cancel => "cancel",
        /// 486 / 600.
        Busy => "busy",
        /// 603, or rejected through an API while ringing.
        Rejected => "rejected",
        /// 404 / 604.
        NotFound => "not_found",
        /// 480, or every device was ignored.
        Unavailable => "unavailable",
        /// 408: nobody answered before the ring timeout.
        NoAnswer => "no_answer",
        /// 488 / 606, or an answer without usable SDP.
        Incompatible => "incompatible",
        /// Any other failure (other 4xx-6xx, 5xx, no device reachable, internal errors).
        Failed => "failed",
        /// The ACK to our 2xx (or a request of the dialog) timed out.
        AckTimeout => "ack_timeout",
        /// No RTP from either side for the inactivity timeout.
        RtpTimeout => "rtp_timeout",
        /// A session refresh (RFC 4028) did not come or failed.
        SessionExpired => "session_expired",
        /// Nobody took a parked call and the parker could not be called back.
        ParkTimeout => "park_timeout",
        /// The call's party was taken over by another call (REFER with Replaces).
        Replaced => "replaced",
        /// A transfer's target was not reached after the transferor had left.
        TransferFailed => "transfer_failed",
        /// A leg left by parking the call (call-record legs only).
        Parked => "parked",
        /// A leg left by transferring the call, or a transfer target that answered
        /// (call-record legs only).
        Transferred => "transferred",
        /// The server stopped without ending the call (a crash or kill): its record was
        /// written at the next start (call records only).
        Crash => "crash",
        /// The node that owned the call stopped heartbeating (killed, crashed, cut off) and
        /// a surviving node of the cluster closed its record (call records only; written
        /// once, by the first survivor that noticed, docs/deploy.md).
        NodeFailure => "node_failure",
    }
}

impl EndCause {
    /// The cause a SIP failure status stands for.
    pub fn for_status(status: u16) -> EndCause {
        match status {
            486 | 600 => EndCause::Busy,
            603 => EndCause::Rejected,
            404 | 604 => EndCause::NotFound,
            480 => EndCause::Unavailable,
            408 => EndCause::NoAnswer,
            487 => EndCause::Cancel,
            488 | 606 => EndCause::Incompatible,
            _ => EndCause::Failed,
        }
    }
}

wire_enum! {
    /// Why a command does not fit the call's state now (`CommandError::WrongState`); the word
    /// completes "not possible while the call is ...".
    pub enum WrongState {
        Ringing => "ringing",
        Answered => "answered",
        Ended => "ended",
        /// A re-INVITE of ours is still waiting for its answer.
        Pending => "pending",
        /// A re-INVITE cannot be sent on the dialog now.
        Updating => "updating",
        Transferring => "transferring",
        Parked => "parked",
        NotParked => "not parked",
        InVoicemail => "in voicemail",
        AlreadyRecording => "already recording",
        NotRecording => "not recording",
        NoFreeOrbit => "without a free park orbit",
        /// A call we originate still rings the caller's own phones.
        CallingCaller => "calling the caller",
        NotTransferring => "not transferring",
        InBlindTransfer => "in a blind transfer",
        AwaitingTarget => "waiting for the transfer target to answer",
        /// The leg is in a conference already.
        InConference => "in a conference",
        /// The leg is in no conference.
        NotInConference => "not in a conference",
        /// A command that needs two calls (or a call and a conference) on one node found
        /// them on different nodes of the cluster (bridge, bringing in another call's leg,
        /// joining a conference running on another node than the call).
        OnAnotherNode => "on another node than the other call",
    }
}

impl From<CallState> for WrongState {
    fn from(state: CallState) -> WrongState {
        match state {
            CallState::Ringing => WrongState::Ringing,
            CallState::Answered => WrongState::Answered,
            CallState::Ended => WrongState::Ended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Round trip and serde for one vocabulary; returns its words.
    fn words<T>(
        all: &[T],
        as_str: fn(T) -> &'static str,
        parse: fn(&str) -> Option<T>,
    ) -> Vec<&'static str>
    where
        T: Copy + PartialEq + std::fmt::Debug + serde::Serialize + fmt::Display,
    {
        for v in all {
            let w = as_str(*v);
            assert_eq!(parse(w), Some(*v), "{w}");
            assert_eq!(v.to_string(), w);
            assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{w}\""));
        }
        let words: Vec<&'static str> = all.iter().map(|v| as_str(*v)).collect();
        let mut unique = words.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), words.len(), "duplicate wire words: {words:?}");
        words
    }

    #[test]
    fn wire_words_are_todays_strings() {
        assert_eq!(
            words(CallState::ALL, CallState::as_str, CallState::parse),
            ["ringing", "answered", "ended"]
        );
        assert_eq!(
            words(LegState::ALL, LegState::as_str, LegState::parse),
            [
                "setup",
                "proceeding",
                "ringing",
                "answered",
                "held",
                "disconnected"
            ]
        );
        assert_eq!(
            words(
                CallDirection::ALL,
                CallDirection::as_str,
                CallDirection::parse
            ),
            ["internal", "inbound", "outbound"]
        );
        assert_eq!(
            words(LegDirection::ALL, LegDirection::as_str, LegDirection::parse),
            ["in", "out"]
        );
        assert_eq!(
            words(LegRole::ALL, LegRole::as_str, LegRole::parse),
            ["caller", "callee"]
        );
        assert_eq!(
            words(RecordRole::ALL, RecordRole::as_str, RecordRole::parse),
            ["caller", "callee", "transfer"]
        );
        assert_eq!(
            words(EndCause::ALL, EndCause::as_str, EndCause::parse),
            [
                "normal",
                "api",
                "shutdown",
                "cancel",
                "busy",
                "rejected",
                "not_found",
                "unavailable",
                "no_answer",
                "incompatible",
                "failed",
                "ack_timeout",
                "rtp_timeout",
                "session_expired",
                "park_timeout",
                "replaced",
                "transfer_failed",
                "parked",
                "transferred",
                "crash",
                "node_failure",
            ]
        );
        assert_eq!(
            words(WrongState::ALL, WrongState::as_str, WrongState::parse),
            [
                "ringing",
                "answered",
                "ended",
                "pending",
                "updating",
                "transferring",
                "parked",
                "not parked",
                "in voicemail",
                "already recording",
                "not recording",
                "without a free park orbit",
                "calling the caller",
                "not transferring",
                "in a blind transfer",
                "waiting for the transfer target to answer",
                "in a conference",
                "not in a conference",
                "on another node than the other call",
            ]
        );
    }

    #[test]
    fn unknown_words_do_not_parse() {
        assert_eq!(EndCause::parse("caller_hangup"), None);
        assert_eq!(EndCause::parse("Normal"), None);
        assert_eq!(CallDirection::parse(""), None);
        let e = "sideways".parse::<LegDirection>().unwrap_err();
        assert_eq!(e.to_string(), "'sideways' is not a LegDirection");
        assert_eq!("out".parse::<LegDirection>(), Ok(LegDirection::Out));
    }

    #[test]
    fn statuses_name_their_cause() {
        assert_eq!(EndCause::for_status(486), EndCause::Busy);
        assert_eq!(EndCause::for_status(600), EndCause::Busy);
        assert_eq!(EndCause::for_status(603), EndCause::Rejected);
        assert_eq!(EndCause::for_status(404), EndCause::NotFound);
        assert_eq!(EndCause::for_status(480), EndCause::Unavailable);
        assert_eq!(EndCause::for_status(487), EndCause::Cancel);
        assert_eq!(EndCause::for_status(408), EndCause::NoAnswer);
        assert_eq!(EndCause::for_status(606), EndCause::Incompatible);
        assert_eq!(EndCause::for_status(500), EndCause::Failed);
    }

    #[test]
    fn call_states_are_wrong_states_with_the_same_word() {
        for s in CallState::ALL {
            assert_eq!(WrongState::from(*s).as_str(), s.as_str());
        }
        assert_eq!(RecordRole::from(LegRole::Caller).as_str(), "caller");
        assert_eq!(RecordRole::from(LegRole::Callee).as_str(), "callee");
    }
}
