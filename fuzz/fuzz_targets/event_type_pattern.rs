//! Event types and subscription filters: parsing never panics, a filter written back as its
//! pattern parses to itself, `*` matches every valid type, an exact filter matches its own type
//! and nothing else, and `<type>.*` matches the types under it but not the type itself.
#![no_main]

use arbitrary::Arbitrary;
use herald_domain::{EventFilter, EventType};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    pattern: &'a str,
    event_type: &'a str,
    segment: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let filter = EventFilter::parse(input.pattern);
    if let Ok(f) = &filter {
        assert_eq!(EventFilter::parse(&f.to_pattern()).as_ref(), Ok(f));
        // Matching is defined on any string, valid type or not.
        let matched = f.matches(input.event_type);
        match f {
            EventFilter::All => assert!(matched),
            EventFilter::Exact(t) => assert_eq!(matched, t.as_str() == input.event_type),
            EventFilter::Prefix(p) => {
                assert!(p.ends_with('.'));
                assert_eq!(matched, input.event_type.starts_with(p.as_str()));
            }
        }
    }
    let Ok(t) = EventType::parse(input.event_type) else {
        return;
    };
    assert!(EventFilter::parse("*").unwrap().matches(t.as_str()));
    let exact = EventFilter::parse(t.as_str()).expect("a valid type is a valid exact filter");
    assert_eq!(exact, EventFilter::Exact(t.clone()));
    assert!(exact.matches(t.as_str()));
    if let Ok(f @ EventFilter::Exact(other)) = &filter {
        assert_eq!(f.matches(t.as_str()), other == &t);
    }
    // `<type>.*` is a valid prefix filter: it covers `<type>.<segment>`, not `<type>`.
    let prefix = EventFilter::parse(&format!("{}.*", t.as_str()))
        .expect("a valid type makes a valid prefix filter");
    assert!(!prefix.matches(t.as_str()));
    let below = format!("{}.{}", t.as_str(), input.segment);
    if EventType::parse(&below).is_ok() {
        assert!(prefix.matches(&below));
    }
});
