//! Frame decoding: any byte stream, cut anywhere, decodes without panic; frames encoded
//! from any payloads decode back to the same payloads, in order, whatever the cuts.
#![no_main]

use ktstr::proto::{Decoder, Encoder, Event, FrameKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(cut).max(1);
    // Arbitrary bytes: decode in pieces of `step`.
    let mut d = Decoder::new();
    for piece in rest.chunks(step) {
        for ev in d.push(piece) {
            if let Event::Frame(f) = ev {
                assert!(f.payload.len() <= ktstr::proto::MAX_PAYLOAD);
            }
        }
    }
    let _ = d.finish();
    // The same bytes as payloads of real frames come back whole, in order.
    let mut e = Encoder::default();
    let payloads: Vec<&[u8]> = rest.chunks(step * 7 + 1).collect();
    let mut wire = Vec::new();
    for p in &payloads {
        wire.extend(e.frames(FrameKind::Stdout, p));
    }
    let mut d = Decoder::new();
    let mut got = Vec::new();
    for piece in wire.chunks(step) {
        for ev in d.push(piece) {
            match ev {
                Event::Frame(f) => got.extend_from_slice(&f.payload),
                other => panic!("clean frames gave {other:?}"),
            }
        }
    }
    assert!(d.finish().is_none(), "nothing left over");
    assert_eq!(got, rest);
});
