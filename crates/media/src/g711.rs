//! G.711 µ-law (PCMU) and A-law (PCMA), sans-IO: 16-bit linear PCM <-> one byte per sample.
//!
//! The classic segment algorithms (ITU-T G.711, as in the public-domain Sun reference code).
//! Decoding is a 256-entry table built at compile time; encoding is a few integer operations.
//! Both operate on 16-bit samples: µ-law covers ±32124, A-law ±32256, louder input clips.

use crate::sdp::Codec;

/// Which G.711 companding law a leg receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Law {
    /// µ-law, PCMU (static PT 0).
    Mulaw,
    /// A-law, PCMA (static PT 8).
    Alaw,
}

impl Law {
    /// The law of a negotiated codec: `Some` for PCMU/8000 and PCMA/8000 (mono), else `None`.
    pub fn for_codec(codec: &Codec) -> Option<Law> {
        if !codec.is_g711() {
            return None;
        }
        if codec.name.eq_ignore_ascii_case("PCMU") {
            Some(Law::Mulaw)
        } else {
            Some(Law::Alaw)
        }
    }

    /// The RFC 3551 static payload type (0 or 8).
    pub fn static_pt(self) -> u8 {
        match self {
            Law::Mulaw => 0,
            Law::Alaw => 8,
        }
    }

    /// The encoded byte of digital silence.
    pub fn silence(self) -> u8 {
        match self {
            Law::Mulaw => 0xFF,
            Law::Alaw => 0xD5,
        }
    }

    pub fn encode_sample(self, s: i16) -> u8 {
        match self {
            Law::Mulaw => ulaw_encode(s),
            Law::Alaw => alaw_encode(s),
        }
    }

    pub fn decode_sample(self, b: u8) -> i16 {
        match self {
            Law::Mulaw => ulaw_decode(b),
            Law::Alaw => alaw_decode(b),
        }
    }

    /// Encodes `pcm` into `out` (pairwise; the shorter length wins). Returns the bytes written.
    pub fn encode(self, pcm: &[i16], out: &mut [u8]) -> usize {
        let n = pcm.len().min(out.len());
        match self {
            Law::Mulaw => {
                for (o, s) in out.iter_mut().zip(pcm) {
                    *o = ulaw_encode(*s);
                }
            }
            Law::Alaw => {
                for (o, s) in out.iter_mut().zip(pcm) {
                    *o = alaw_encode(*s);
                }
            }
        }
        n
    }

    /// Decodes `bytes` into `out` (pairwise; the shorter length wins). Returns the samples
    /// written.
    pub fn decode(self, bytes: &[u8], out: &mut [i16]) -> usize {
        let table = match self {
            Law::Mulaw => &ULAW_TABLE,
            Law::Alaw => &ALAW_TABLE,
        };
        let n = bytes.len().min(out.len());
        for (o, b) in out.iter_mut().zip(bytes) {
            *o = table[*b as usize];
        }
        n
    }

    /// Decodes into a new vector.
    pub fn decode_vec(self, bytes: &[u8]) -> Vec<i16> {
        let mut out = vec![0i16; bytes.len()];
        self.decode(bytes, &mut out);
        out
    }
}

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// Linear 16-bit -> µ-law.
pub fn ulaw_encode(s: i16) -> u8 {
    let mut v = s as i32;
    let sign = if v < 0 {
        v = -v;
        0x80
    } else {
        0
    };
    v = v.min(ULAW_CLIP) + ULAW_BIAS;
    // v is in 0x84..=0x7FFF: its highest set bit is bit 7..=14, the segment is that minus 7.
    let exponent = (31 - (v as u32).leading_zeros()) as i32 - 7;
    let mantissa = (v >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// µ-law -> linear 16-bit (table lookup).
pub fn ulaw_decode(b: u8) -> i16 {
    ULAW_TABLE[b as usize]
}

const fn ulaw_decode_calc(b: u8) -> i16 {
    let u = !b;
    let t = ((((u & 0x0F) as i32) << 3) + ULAW_BIAS) << ((u & 0x70) >> 4);
    if u & 0x80 != 0 {
        (ULAW_BIAS - t) as i16
    } else {
        (t - ULAW_BIAS) as i16
    }
}

/// Linear 16-bit -> A-law.
pub fn alaw_encode(s: i16) -> u8 {
    // A-law works on 13 bits.
    let mut v = (s as i32) >> 3;
    let mask: u8 = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    // Segment: 0 for v < 32, then one per doubling up to 7 (v <= 0xFFF always holds for i16).
    let seg = if v < 32 {
        0
    } else {
        (31 - (v as u32).leading_zeros()) as i32 - 4
    };
    let quant = if seg < 2 {
        (v >> 1) & 0x0F
    } else {
        (v >> seg) & 0x0F
    };
    (((seg << 4) | quant) as u8) ^ mask
}

/// A-law -> linear 16-bit (table lookup).
pub fn alaw_decode(b: u8) -> i16 {
    ALAW_TABLE[b as usize]
}

const fn alaw_decode_calc(b: u8) -> i16 {
    let a = b ^ 0x55;
    let mut t = ((a & 0x0F) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => t = (t + 0x108) << (seg - 1),
    }
    if a & 0x80 != 0 {
        t as i16
    } else {
        -t as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode_calc(i as u8)
        } else {
            ulaw_decode_calc(i as u8)
        };
        i += 1;
    }
    t
}

static ULAW_TABLE: [i16; 256] = build_table(false);
static ALAW_TABLE: [i16; 256] = build_table(true);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_known_values() {
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(ulaw_encode(-1), 0x7F);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(ulaw_encode(1000), 0xCE);
        assert_eq!(ulaw_encode(-1000), 0x4E);
        assert_eq!(ulaw_decode(0xFF), 0);
        assert_eq!(ulaw_decode(0x7F), 0);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0xCE), 988);
        assert_eq!(ulaw_decode(0x4E), -988);
        assert_eq!(ulaw_decode(0xFE), 8);
        assert_eq!(ulaw_decode(0xEF), 132);
    }

    #[test]
    fn alaw_known_values() {
        assert_eq!(alaw_encode(0), 0xD5);
        assert_eq!(alaw_encode(-1), 0x55);
        assert_eq!(alaw_encode(i16::MAX), 0xAA);
        assert_eq!(alaw_encode(i16::MIN), 0x2A);
        assert_eq!(alaw_encode(1000), 0xFA);
        assert_eq!(alaw_encode(-1000), 0x7A);
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(alaw_decode(0x2A), -32256);
        assert_eq!(alaw_decode(0xFA), 1008);
        assert_eq!(alaw_decode(0x7A), -1008);
    }

    #[test]
    fn every_code_round_trips() {
        for b in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(b)), b, "alaw {b:#04x}");
            // µ-law has two zeros (0xFF and 0x7F); both decode to 0, which encodes as 0xFF.
            let expect = if b == 0x7F { 0xFF } else { b };
            assert_eq!(ulaw_encode(ulaw_decode(b)), expect, "ulaw {b:#04x}");
        }
    }

    #[test]
    fn decoding_is_monotonic_and_symmetric() {
        let mut u: Vec<i16> = (0..=255u8).map(ulaw_decode).collect();
        let mut a: Vec<i16> = (0..=255u8).map(alaw_decode).collect();
        for b in 0..=127u8 {
            assert_eq!(ulaw_decode(b), -ulaw_decode(b | 0x80));
            assert_eq!(alaw_decode(b), -alaw_decode(b | 0x80));
        }
        u.sort_unstable();
        u.dedup();
        a.sort_unstable();
        a.dedup();
        assert_eq!(u.len(), 255, "µ-law has 255 distinct levels");
        assert_eq!(a.len(), 256);
    }

    /// Quantisation error is bounded by half a segment step: 8 near zero, then about 1/32 of the
    /// magnitude (3 % relative), plus the clipping above the largest code.
    #[test]
    fn round_trip_error_bounds() {
        for law in [Law::Mulaw, Law::Alaw] {
            let max_code = law.decode_sample(law.encode_sample(i16::MAX)) as i32;
            for x in i16::MIN..=i16::MAX {
                let y = law.decode_sample(law.encode_sample(x)) as i32;
                let x = x as i32;
                let err = (y - x).abs();
                let bound = if x.abs() > max_code {
                    x.abs() - max_code + 1024
                } else {
                    ((x.abs() + 132) / 32).max(8) + 4
                };
                assert!(err <= bound, "{law:?}: {x} -> {y}, error {err} > {bound}");
                // Never flips the sign of anything audible.
                if x.abs() > 16 {
                    assert_eq!(x.signum(), y.signum(), "{law:?}: {x} -> {y}");
                }
            }
        }
    }

    #[test]
    fn sine_snr_is_telephone_quality() {
        let pcm: Vec<i16> = (0..8000)
            .map(|i| {
                (16000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 8000.0).sin()) as i16
            })
            .collect();
        for law in [Law::Mulaw, Law::Alaw] {
            let mut enc = vec![0u8; pcm.len()];
            assert_eq!(law.encode(&pcm, &mut enc), pcm.len());
            let dec = law.decode_vec(&enc);
            let (mut sig, mut noise) = (0f64, 0f64);
            for (x, y) in pcm.iter().zip(&dec) {
                sig += (*x as f64).powi(2);
                noise += (*x as f64 - *y as f64).powi(2);
            }
            let snr = 10.0 * (sig / noise).log10();
            assert!(snr > 33.0, "{law:?} SNR {snr:.1} dB");
        }
    }

    #[test]
    fn buffers_and_codec_mapping() {
        let mut out = [0u8; 2];
        assert_eq!(Law::Mulaw.encode(&[0, 0, 0], &mut out), 2);
        assert_eq!(out, [0xFF, 0xFF]);
        let mut pcm = [1i16; 3];
        assert_eq!(Law::Alaw.decode(&[0xD5], &mut pcm), 1);
        assert_eq!(pcm, [8, 1, 1]);
        assert_eq!(Law::Mulaw.silence(), ulaw_encode(0));
        assert_eq!(Law::Alaw.silence(), alaw_encode(0));
        assert_eq!(Law::for_codec(&Codec::pcmu()), Some(Law::Mulaw));
        assert_eq!(Law::for_codec(&Codec::pcma()), Some(Law::Alaw));
        assert_eq!(
            Law::for_codec(&Codec::new(96, "pcma", 8000)),
            Some(Law::Alaw)
        );
        assert_eq!(Law::for_codec(&Codec::telephone_event(101)), None);
        assert_eq!(Law::for_codec(&Codec::new(9, "G722", 8000)), None);
        assert_eq!((Law::Mulaw.static_pt(), Law::Alaw.static_pt()), (0, 8));
    }
}
