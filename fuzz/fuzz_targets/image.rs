//! Arbitrary bytes through everything restart does with an image before it
//! creates a process: the framed decoder, and, for payloads framed validly
//! (first byte: which kind, the rest: the payload, so the fuzzer gets past
//! the checksum), postcard decoding, the process checks, the page-read
//! planner and the tree checks. Nothing may panic or over-allocate.
#![no_main]

use cryo_image::meta::{self, Kind};
use cryo_image::{Inventory, ProcessImage};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let _ = meta::decode::<Inventory>("fuzz", Kind::Inventory, data);
    let _ = meta::decode::<ProcessImage>("fuzz", Kind::Process, data);
    let Some((&which, payload)) = data.split_first() else { return };
    if which & 1 == 0 {
        let framed = meta::frame(Kind::Process, payload);
        if let Ok(p) = meta::decode::<ProcessImage>("fuzz", Kind::Process, &framed) {
            let _ = cryo_restorer::plan_process(&p);
        }
    } else {
        let framed = meta::frame(Kind::Inventory, payload);
        if let Ok(inv) = meta::decode::<Inventory>("fuzz", Kind::Inventory, &framed) {
            let _ = cryo_restorer::check_tree(&inv, &HashMap::new());
        }
    }
});
