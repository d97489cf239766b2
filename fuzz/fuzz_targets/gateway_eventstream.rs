//! Arbitrary bytes from an upstream, split at an arbitrary point → the event-stream decoder
//! never panics, never loops, and never holds more than it was given; a frame it accepts
//! re-encodes to the same bytes.
#![no_main]

use corral_gateway::eventstream::{encode, Decoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(split).min(rest.len());
    let mut decoder = Decoder::new();
    let mut fed = 0;
    for part in [&rest[..cut], &rest[cut..]] {
        decoder.push(part);
        fed += part.len();
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    let headers: Vec<(&str, &str)> = frame
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let again = encode(&headers, &frame.payload);
                    let mut check = Decoder::new();
                    check.push(&again);
                    let round = check.next_frame().expect("re-encoded frame decodes");
                    assert_eq!(round.map(|f| f.payload), Some(frame.payload.clone()));
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(decoder.pending() <= fed);
    }
});
