use super::*;
use crate::verbs::common::Loop;
use crate::verbs::dial::DialTarget;

fn verbs(xml: &str) -> Vec<Verb> {
    parse(xml)
        .unwrap()
        .into_iter()
        .map(|v| v.unwrap())
        .collect()
}

#[test]
fn a_document_compiles_to_the_shared_verbs() {
    let v = verbs(
        r#"<?xml version="1.0" encoding="UTF-8"?>
        <Response>
          <Say voice="woman" language="en-GB" loop="2">Hello &amp; welcome</Say>
          <Play loop="0">http://h/a.wav</Play>
          <Pause length="2"/>
          <Pause/>
          <Gather action="/digits" method="GET" numDigits="2" timeout="7" finishOnKey="*">
            <Say>Press</Say><Say>two keys</Say><Pause length="3"/>
          </Gather>
          <Dial action="/dialled" timeout="20" timeLimit="60" callerId="+4930"><Client>alice</Client></Dial>
          <Dial>202</Dial>
          <Redirect method="GET">next.xml</Redirect>
          <Reject reason="busy"/>
          <Hangup/>
        </Response>"#,
    );
    let names: Vec<&str> = v.iter().map(Verb::name).collect();
    assert_eq!(
        names,
        [
            "say",
            "play",
            "pause",
            "pause",
            "gather",
            "dial",
            "dial",
            "redirect",
            "sip:decline",
            "hangup"
        ]
    );
    let Verb::Say(say) = &v[0] else { panic!() };
    assert_eq!(say.text.0, ["Hello & welcome"]);
    assert_eq!(say.repeat, Loop::Times(2));
    let synth = say.synthesizer.as_ref().unwrap();
    assert_eq!(
        (synth.voice.as_deref(), synth.language.as_deref()),
        (Some("woman"), Some("en-GB"))
    );
    let Verb::Play(play) = &v[1] else { panic!() };
    assert_eq!(
        play.repeat,
        Loop::Forever,
        "loop=0 plays until the call moves on"
    );
    let Verb::Pause(p) = &v[3] else { panic!() };
    assert_eq!(p.length, 1.0);
    let Verb::Gather(g) = &v[4] else { panic!() };
    assert_eq!(g.num_digits, Some(2));
    assert_eq!(g.finish_on_key.as_deref(), Some("*"));
    assert_eq!(g.timeout, Some(10.0), "a nested pause lengthens the wait");
    assert_eq!(g.inter_digit_timeout, Some(7.0));
    assert_eq!(g.say.as_ref().unwrap().text.0, ["Press", "two keys"]);
    let hook = g.action_hook.as_ref().unwrap();
    assert_eq!(
        (hook.url.as_str(), hook.method),
        ("/digits", Some(Method::Get))
    );
    assert!(g.fall_through_on_timeout);
    let Verb::Dial(d) = &v[5] else { panic!() };
    assert_eq!(
        d.target,
        [DialTarget::User {
            name: "alice".into()
        }]
    );
    assert_eq!((d.timeout, d.time_limit), (Some(20.0), Some(60.0)));
    assert_eq!(d.caller_id.as_deref(), Some("+4930"));
    assert_eq!(d.action_hook.as_ref().unwrap().url, "/dialled");
    let Verb::Dial(d) = &v[6] else { panic!() };
    assert_eq!(
        d.target,
        [DialTarget::Phone {
            number: "202".into()
        }]
    );
    assert_eq!(d.action_hook, None);
    let Verb::Decline(r) = &v[8] else { panic!() };
    assert_eq!(r.status, 486);
}

#[test]
fn gather_defaults_and_empty_documents() {
    let v = verbs("<Response><Gather/></Response>");
    let Verb::Gather(g) = &v[0] else { panic!() };
    assert_eq!(g.finish_on_key.as_deref(), Some("#"));
    assert_eq!(g.timeout, Some(5.0));
    // No action: the current document (an empty URL resolves to it).
    assert_eq!(g.action_hook.as_ref().unwrap().url, "");
    assert!(verbs("<Response/>").is_empty());
    let v = verbs(r#"<Response><Reject/><Gather finishOnKey=""/></Response>"#);
    let Verb::Decline(r) = &v[0] else { panic!() };
    assert_eq!(r.status, 603);
    let Verb::Gather(g) = &v[1] else { panic!() };
    assert_eq!(g.finish_on_key, None);
}

#[test]
fn bad_documents_are_errors_of_the_whole_document() {
    let err = |xml: &str| parse(xml).unwrap_err();
    assert!(matches!(
        err("<Response><Say>hi</Response>"),
        RcmlError::Xml(_)
    ));
    assert!(matches!(err("not xml at all"), RcmlError::Xml(_)));
    assert!(matches!(err(""), RcmlError::Xml(_)));
    assert_eq!(err("<Reply/>"), RcmlError::NotResponse("Reply".into()));
    assert_eq!(
        err("<Response><Say>hi</Say><Dance/></Response>"),
        RcmlError::UnknownVerb("Dance".into())
    );
    for bad in [
        "<Response><Say/></Response>",
        "<Response><Play>  </Play></Response>",
        r#"<Response><Pause length="-1"/></Response>"#,
        r#"<Response><Say loop="x">a</Say></Response>"#,
        r#"<Response><Gather numDigits="two"/></Response>"#,
        r###"<Response><Gather finishOnKey="##"/></Response>"###,
        r#"<Response><Gather method="PUT"/></Response>"#,
        "<Response><Gather><Dial>1</Dial></Gather></Response>",
        "<Response><Dial/></Response>",
        "<Response><Dial><Queue>q</Queue></Dial></Response>",
        r#"<Response><Reject reason="later"/></Response>"#,
        "<Response><Redirect/></Response>",
        r#"<Response><Record maxLength="0"/></Response>"#,
        r##"<Response><Record finishOnKey="#x"/></Response>"##,
        r#"<Response><Record playBeep="loud"/></Response>"#,
        r#"<Response><Record timeout="-2"/></Response>"#,
        r#"<Response><Dial record="sometimes">1</Dial></Response>"#,
    ] {
        assert!(
            matches!(parse(bad), Err(RcmlError::Invalid { .. })),
            "{bad}"
        );
    }
    for bad in [
        "<Response><Dial><Conference>bad room</Conference></Dial></Response>",
        "<Response><Dial><Conference></Conference></Dial></Response>",
        r#"<Response><Dial><Conference beep="loud">r</Conference></Dial></Response>"#,
        r#"<Response><Dial><Conference muted="yes">r</Conference></Dial></Response>"#,
        r#"<Response><Dial><Conference maxParticipants="0">r</Conference></Dial></Response>"#,
    ] {
        assert!(
            matches!(parse(bad), Err(RcmlError::Invalid { .. })),
            "{bad}"
        );
    }
    assert!(matches!(
        err("<Response><Gather><Say>a</Say><Play>http://h/a.wav</Play></Gather></Response>"),
        RcmlError::NotAvailable { .. }
    ));
    assert!(matches!(
        err(r#"<Response><Record transcribe="true"/></Response>"#),
        RcmlError::NotAvailable { verb: "Record", .. }
    ));
    // A DTD (entity expansion) is refused.
    assert!(matches!(
        err(r#"<!DOCTYPE r [<!ENTITY a "aaaa">]><Response><Say>&a;</Say></Response>"#),
        RcmlError::Xml(_)
    ));
}

#[test]
fn record_and_dial_record() {
    use crate::verbs::dial::DialRecord;
    let v = verbs(
        r#"<Response>
          <Record action="/done" method="GET" maxLength="20" finishOnKey="*" timeout="0" playBeep="false"/>
          <Record/>
          <Record finishOnKey=""/>
          <Dial record="record-from-answer" action="/d">202</Dial>
          <Dial record="record-from-ringing-dual">202</Dial>
          <Dial record="do-not-record">202</Dial>
        </Response>"#,
    );
    let Verb::Record(r) = &v[0] else { panic!() };
    assert_eq!(
        (
            r.max_length,
            r.finish_on_key.as_str(),
            r.timeout,
            r.play_beep
        ),
        (20.0, "*", 0.0, false)
    );
    let hook = r.action_hook.as_ref().unwrap();
    assert_eq!(
        (hook.url.as_str(), hook.method),
        ("/done", Some(Method::Get))
    );
    let Verb::Record(d) = &v[1] else { panic!() };
    assert_eq!(
        (
            d.max_length,
            d.finish_on_key.as_str(),
            d.timeout,
            d.play_beep
        ),
        (3600.0, "1234567890*#", 5.0, true),
        "RestComm's defaults"
    );
    assert_eq!(
        d.action_hook.as_ref().unwrap().url,
        "",
        "the document's own URL"
    );
    let Verb::Record(none) = &v[2] else { panic!() };
    assert_eq!(none.finish_on_key, "");
    let records: Vec<Option<DialRecord>> = v[3..]
        .iter()
        .map(|d| match d {
            Verb::Dial(d) => d.record,
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        records,
        [
            Some(DialRecord::FromAnswer),
            Some(DialRecord::FromRinging),
            None
        ]
    );
}

#[test]
fn dial_conference_is_the_conference_verb() {
    let v = verbs(
        r#"<Response><Dial action="/after" method="GET"><Conference muted="true" beep="false" startConferenceOnEnter="false" endConferenceOnExit="true" maxParticipants="7">room-1</Conference></Dial></Response>"#,
    );
    let [Verb::Conference(c)] = v.as_slice() else {
        panic!("{v:?}");
    };
    assert_eq!(c.name, "room-1");
    assert!(c.join_muted && !c.beep && c.end_conference_on_exit);
    assert_eq!(c.start_conference_on_enter, Some(false));
    assert_eq!(c.max_participants, Some(7));
    assert_eq!(
        c.action_hook.as_ref().map(|h| h.url.as_str()),
        Some("/after")
    );
    // Defaults: beep on, starts the conference, not muted.
    let v = verbs("<Response><Dial><Conference>r</Conference></Dial></Response>");
    let [Verb::Conference(c)] = v.as_slice() else {
        panic!("{v:?}");
    };
    assert!(c.beep && !c.join_muted && c.start_conference_on_enter == Some(true));
    assert!(!c.record_from_start);
    // record="record-from-start": the mix is recorded from the join on.
    let v = verbs(
        r#"<Response><Dial><Conference record="record-from-start">r</Conference></Dial></Response>"#,
    );
    let [Verb::Conference(c)] = v.as_slice() else {
        panic!("{v:?}");
    };
    assert!(c.record_from_start);
    let v = verbs(
        r#"<Response><Dial><Conference record="do-not-record">r</Conference></Dial></Response>"#,
    );
    assert!(matches!(v.as_slice(), [Verb::Conference(c)] if !c.record_from_start));
    assert!(matches!(
        parse(r#"<Response><Dial><Conference record="sometimes">r</Conference></Dial></Response>"#),
        Err(RcmlError::Invalid { .. })
    ));
}
