//! RFC 4733 DTMF end to end on real UDP sockets on 127.0.0.1: digits sent by the bridge are
//! decoded by the receiving "phone"; digits sent by a phone are detected once per press and
//! still relayed.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use hookflash_media::dtmf::{code_digit, DtmfEnd, DtmfError, DtmfOptions, TelephoneEvent};
use hookflash_media::relay::{Bridge, BridgeHandle, BridgeOptions, Leg};
use hookflash_media::rtp::{parse_header, write_header, RtpHeader};
use hookflash_media::{MediaStats, PortPool};
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(5);
const A_SSRC: u32 = 0xA0A0_0001;
const A_FILL: u8 = 0x33;

/// Each test gets its own port range (record tests use 46000-46399).
fn pool(range_index: u16) -> Arc<PortPool> {
    let min = 46_500 + range_index * 100;
    PortPool::new(LO, min, min + 99).unwrap()
}

struct Setup {
    bridge: BridgeHandle,
    phone_a: UdpSocket,
    phone_b: UdpSocket,
}

async fn start(range_index: u16) -> Setup {
    let pool = pool(range_index);
    let bridge = Bridge::start(
        pool.allocate().unwrap(),
        pool.allocate().unwrap(),
        BridgeOptions::default(),
        Arc::new(MediaStats::default()),
    );
    let phone_a = UdpSocket::bind((LO, 0)).await.unwrap();
    let phone_b = UdpSocket::bind((LO, 0)).await.unwrap();
    bridge.set_remote(Leg::A, phone_a.local_addr().unwrap());
    bridge.set_remote(Leg::B, phone_b.local_addr().unwrap());
    Setup {
        bridge,
        phone_a,
        phone_b,
    }
}

fn audio(seq: u16, ts: u32) -> Vec<u8> {
    let mut b = vec![A_FILL; 12 + 160];
    write_header(&mut b, false, 0, seq, ts, A_SSRC);
    b
}

fn event(pt: u8, marker: bool, seq: u16, ts: u32, ev: TelephoneEvent) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    write_header(&mut b, marker, pt, seq, ts, A_SSRC);
    let mut p = [0u8; 4];
    ev.write(&mut p);
    b[12..].copy_from_slice(&p);
    b
}

async fn collect(sock: &UdpSocket, d: Duration) -> Vec<Vec<u8>> {
    let end = Instant::now() + d;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    while let Ok(r) = tokio::time::timeout_at(end, sock.recv_from(&mut buf)).await {
        let (n, _) = r.unwrap();
        out.push(buf[..n].to_vec());
    }
    out
}

fn header(p: &[u8]) -> RtpHeader {
    parse_header(p).expect("RTP")
}

/// What a receiving phone makes of a stream: digits in order, one per event (keyed by
/// timestamp), with their packets.
struct Decoded {
    digit: char,
    packets: Vec<(RtpHeader, TelephoneEvent)>,
}

fn decode_events(packets: &[Vec<u8>], pt: u8) -> Vec<Decoded> {
    let mut out: Vec<Decoded> = Vec::new();
    for p in packets {
        let h = header(p);
        if h.payload_type != pt {
            continue;
        }
        let ev = TelephoneEvent::parse(h.payload(p).unwrap()).unwrap();
        match out.last_mut() {
            Some(d) if d.packets[0].0.timestamp == h.timestamp => d.packets.push((h, ev)),
            _ => out.push(Decoded {
                digit: code_digit(ev.event).unwrap(),
                packets: vec![(h, ev)],
            }),
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_a_sequence_as_rfc4733_events_continuing_the_stream() {
    let Setup {
        bridge,
        phone_a,
        phone_b,
    } = start(0).await;
    bridge.set_dtmf_pt(Leg::B, 96);
    let la = bridge.local_addr(Leg::A);
    // Phone A talks for the whole test (20 ms packets); B receives it relayed, untouched.
    let talker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..110u16 {
            tick.tick().await;
            let p = audio(20_000u16.wrapping_add(i), 1_000_000 + 160 * i as u32);
            phone_a.send_to(&p, la).await.unwrap();
        }
    });
    let mut got = collect(&phone_b, Duration::from_millis(300)).await;
    assert!(got.len() >= 8, "relayed audio first: {}", got.len());
    let opts = DtmfOptions::default();
    let id = bridge.send_dtmf(Leg::B, "*12345#", opts).unwrap();
    assert_eq!(id.leg(), Leg::B);
    let end = timeout(WAIT, bridge.dtmf_done(id)).await.unwrap();
    assert_eq!(end, Some(DtmfEnd::Finished));
    got.extend(collect(&phone_b, Duration::from_millis(400)).await);
    talker.await.unwrap();
    got.extend(collect(&phone_b, Duration::from_millis(100)).await);

    let first_ev = got
        .iter()
        .position(|p| header(p).payload_type == 96)
        .unwrap();
    let last_ev = got
        .iter()
        .rposition(|p| header(p).payload_type == 96)
        .unwrap();
    // Nothing of A's audio in between: it is held back while the digits go out.
    assert!(got[first_ev..=last_ev]
        .iter()
        .all(|p| header(p).payload_type == 96));
    assert!(got.len() > last_ev + 3, "relaying resumed after the digits");

    let events = decode_events(&got, 96);
    let digits: String = events.iter().map(|d| d.digit).collect();
    assert_eq!(digits, "*12345#");
    let mut prev_ts: Option<u32> = None;
    for d in &events {
        let n = d.packets.len();
        // 5 packets of 20 ms (100 ms), the last with E, then two retransmitted ends.
        assert_eq!(n, 7, "{}: {n} packets", d.digit);
        assert!(d.packets[0].0.marker, "{}: start marker", d.digit);
        assert_eq!(
            d.packets.iter().filter(|(h, _)| h.marker).count(),
            1,
            "{}: one marker",
            d.digit
        );
        let ends: Vec<_> = d.packets.iter().filter(|(_, e)| e.end).collect();
        assert_eq!(ends.len(), 3, "{}: three end packets", d.digit);
        assert!(d.packets[n - 3..].iter().all(|(_, e)| e.end), "ends last");
        assert!(ends.iter().all(|(_, e)| e.duration == 800), "100 ms");
        for (k, (_, e)) in d.packets[..n - 3].iter().enumerate() {
            assert_eq!(e.duration as usize, 160 * (k + 1), "growing duration");
        }
        assert!(d.packets.iter().all(|(_, e)| e.volume == 10));
        // Next digit: 100 ms tone + 60 ms gap later on the stream clock.
        let ts = d.packets[0].0.timestamp;
        if let Some(p) = prev_ts {
            assert_eq!(ts.wrapping_sub(p), 8 * 160, "{}", d.digit);
        }
        prev_ts = Some(ts);
    }
    // One stream throughout: A's SSRC, sequence numbers +1 from the relayed audio through the
    // events and back, timestamps never going back.
    for (i, w) in got.windows(2).enumerate() {
        let (a, b) = (header(&w[0]), header(&w[1]));
        assert_eq!(b.ssrc, A_SSRC, "packet {}", i + 1);
        assert_eq!(b.sequence, a.sequence.wrapping_add(1), "seq at {}", i + 1);
        assert!(
            b.timestamp.wrapping_sub(a.timestamp) < 0x8000_0000,
            "ts at {}",
            i + 1
        );
    }
    // The first event continues the audio's timeline; the audio after the last event continues
    // after the events' time, with a marker.
    let before = header(&got[first_ev - 1]);
    assert_eq!(
        header(&got[first_ev]).timestamp,
        before.timestamp.wrapping_add(160)
    );
    let after = header(&got[last_ev + 1]);
    assert!(after.marker);
    let last_event_ts = header(&got[last_ev]).timestamp;
    assert_eq!(after.timestamp.wrapping_sub(last_event_ts), 7 * 160);
    // Sent packets are counted as generated RTP.
    assert_eq!(bridge.stats().played_to(Leg::B), 7 * 7);
    assert_eq!(bridge.dtmf_status(Leg::B).sending, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_errors_are_typed_and_nothing_is_sent() {
    let Setup {
        bridge, phone_b, ..
    } = start(1).await;
    assert_eq!(
        bridge.send_dtmf(Leg::B, "123", DtmfOptions::default()),
        Err(DtmfError::NoTelephoneEvent { leg: Leg::B })
    );
    bridge.set_dtmf_pt(Leg::B, 101);
    assert_eq!(
        bridge.send_dtmf(Leg::B, "12E4", DtmfOptions::default()),
        Err(DtmfError::InvalidDigit {
            ch: 'E',
            position: 2
        })
    );
    assert!(matches!(
        bridge.send_dtmf(
            Leg::B,
            "1",
            DtmfOptions {
                duration_ms: 10,
                ..Default::default()
            }
        ),
        Err(DtmfError::InvalidOptions(_))
    ));
    assert_eq!(
        bridge.send_dtmf(Leg::B, "", DtmfOptions::default()),
        Err(DtmfError::Empty)
    );
    assert!(collect(&phone_b, Duration::from_millis(150))
        .await
        .is_empty());

    // Two sends queue up; stop_dtmf cancels the rest, ending the tone in progress properly.
    let first = bridge
        .send_dtmf(Leg::B, "1234", DtmfOptions::default())
        .unwrap();
    let second = bridge
        .send_dtmf(Leg::B, "9", DtmfOptions::default())
        .unwrap();
    assert!(second.number() > first.number());
    tokio::time::sleep(Duration::from_millis(50)).await;
    bridge.stop_dtmf(Leg::B);
    assert_eq!(
        timeout(WAIT, bridge.dtmf_done(first)).await.unwrap(),
        Some(DtmfEnd::Cancelled)
    );
    assert_eq!(
        timeout(WAIT, bridge.dtmf_done(second)).await.unwrap(),
        Some(DtmfEnd::Cancelled)
    );
    let got = collect(&phone_b, Duration::from_millis(200)).await;
    let events = decode_events(&got, 101);
    assert_eq!(events.len(), 1, "only the digit in progress");
    assert_eq!(events[0].digit, '1');
    let last = events[0].packets.last().unwrap().1;
    assert!(last.end);
    assert_eq!(events[0].packets.iter().filter(|(_, e)| e.end).count(), 3);

    // After clear_dtmf_pt: NoTelephoneEvent (SIP INFO fallback).
    bridge.clear_dtmf_pt(Leg::B);
    assert_eq!(
        bridge.send_dtmf(Leg::B, "1", DtmfOptions::default()),
        Err(DtmfError::NoTelephoneEvent { leg: Leg::B })
    );
    // A stopped bridge.
    bridge.set_dtmf_pt(Leg::A, 101);
    let pending = bridge
        .send_dtmf(Leg::A, "5555", DtmfOptions::default())
        .unwrap();
    bridge.stop();
    timeout(WAIT, bridge.stopped()).await.unwrap();
    assert_eq!(
        timeout(WAIT, bridge.dtmf_done(pending)).await.unwrap(),
        Some(DtmfEnd::BridgeStopped)
    );
    assert_eq!(
        bridge.send_dtmf(Leg::A, "1", DtmfOptions::default()),
        Err(DtmfError::BridgeStopped)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_each_press_once_and_still_relays() {
    let Setup {
        bridge,
        phone_a,
        phone_b,
    } = start(2).await;
    // telephone-event is 101 towards A and 96 towards B.
    bridge.set_dtmf_pt(Leg::A, 101);
    bridge.set_dtmf_pt(Leg::B, 96);
    bridge.set_pt_map(Leg::A, vec![(101, 96)]);
    bridge.set_pt_map(Leg::B, vec![(96, 101)]);
    let mut events = bridge.dtmf_events();
    let la = bridge.local_addr(Leg::A);

    let mut seq = 100u16;
    let mut next = || {
        seq = seq.wrapping_add(1);
        seq
    };
    let mut packets = Vec::new();
    // Some audio, then '5': start sent three times (as some phones do), updates, 3 ends (one
    // retransmission arriving late, after the next audio), then '#' pressed, then '5' again.
    let ev = |event: u8, end: bool, duration: u16| TelephoneEvent {
        event,
        end,
        volume: 10,
        duration,
    };
    for i in 0..3u32 {
        packets.push(audio(next(), 8000 + 160 * i));
    }
    for (m, e) in [
        (true, ev(5, false, 0)),
        (true, ev(5, false, 0)),
        (true, ev(5, false, 0)),
        (false, ev(5, false, 160)),
        (false, ev(5, false, 320)),
        (false, ev(5, true, 480)),
        (false, ev(5, true, 480)),
    ] {
        packets.push(event(101, m, next(), 8480, e));
    }
    packets.push(audio(next(), 9120));
    packets.push(event(101, false, next(), 8480, ev(5, true, 480)));
    for e in [
        ev(11, false, 160),
        ev(11, true, 320),
        ev(11, true, 320),
        ev(11, true, 320),
    ] {
        packets.push(event(101, e.duration == 160, next(), 12_000, e));
    }
    for e in [
        ev(5, false, 160),
        ev(5, true, 640),
        ev(5, true, 640),
        ev(5, true, 640),
    ] {
        packets.push(event(101, e.duration == 160, next(), 20_000, e));
    }
    let sent = packets.len();
    for p in &packets {
        phone_a.send_to(p, la).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let mut got = Vec::new();
    while let Ok(Ok(e)) = timeout(Duration::from_millis(300), events.recv()).await {
        got.push(e);
    }
    let digits: Vec<(Leg, char, u32)> = got
        .iter()
        .map(|e| (e.leg, e.digit, e.duration_ms))
        .collect();
    assert_eq!(
        digits,
        vec![(Leg::A, '5', 60), (Leg::A, '#', 40), (Leg::A, '5', 80)]
    );
    // Every packet reached B, events with B's payload type.
    let relayed = collect(&phone_b, Duration::from_millis(200)).await;
    assert_eq!(relayed.len(), sent);
    let event_pts: Vec<u8> = relayed
        .iter()
        .map(|p| header(p).payload_type)
        .filter(|pt| *pt != 0)
        .collect();
    assert_eq!(event_pts.len(), sent - 4);
    assert!(event_pts.iter().all(|pt| *pt == 96));
}
