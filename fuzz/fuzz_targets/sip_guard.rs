//! The SIP datagram guard (`crates/sip/src/guard.rs` `inspect`): every UDP datagram from the
//! network passes it before rsipstack's parser.
//!
//! Invariants (docs/fuzzing.md):
//! - no panic, whatever the bytes;
//! - `Rewrite`: the body is kept byte for byte, the result is not larger than the documented
//!   bound (`guard::rewrite_bound`), and it is a fixed point (the guard passes it unchanged);
//! - `Reply`: a well-formed status line with one of the statuses the guard sends, headers end
//!   with an empty line and `Content-Length: 0`, and the reply is not larger than the
//!   documented bound (`guard::reply_bound`: no reflection amplification);
//! - nothing larger than `MAX_SIP_DATAGRAM` is passed on.
#![no_main]

use hookflash_sip::guard::{self, inspect, Verdict, MAX_SIP_DATAGRAM};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match inspect(data) {
        Verdict::Pass => assert!(data.len() <= MAX_SIP_DATAGRAM),
        Verdict::Drop(why) => assert!(!why.is_empty()),
        Verdict::Rewrite(out) => {
            assert!(
                out.len() <= guard::rewrite_bound(data.len()),
                "rewrite of {} bytes grew to {}",
                data.len(),
                out.len()
            );
            let body_at = |m: &[u8]| {
                m.windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map(|p| p + 4)
                    .expect("a rewrite ends its head with CRLF CRLF")
            };
            let out_body = &out[body_at(&out)..];
            assert!(
                data.ends_with(out_body),
                "the body must be kept byte for byte"
            );
            assert_eq!(
                inspect(&out),
                Verdict::Pass,
                "a rewrite must be canonical: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        Verdict::Reply {
            status,
            reason,
            response,
        } => {
            assert!(matches!(status, 400 | 483 | 501 | 505), "status {status}");
            let text = std::str::from_utf8(&response).expect("replies are UTF-8");
            assert!(text.starts_with(&format!("SIP/2.0 {status} {reason}\r\n")));
            assert!(text.ends_with("\r\nContent-Length: 0\r\n\r\n"));
            assert_eq!(
                text.find("\r\n\r\n"),
                Some(text.len() - 4),
                "one head, no body"
            );
            assert!(
                response.len() <= guard::reply_bound(data.len()),
                "reply of {} bytes to a request of {} bytes",
                response.len(),
                data.len()
            );
        }
    }
});
