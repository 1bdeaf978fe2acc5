//! A chaos experiment file as `scalectl chaos run FILE` reads it: parsing must end,
//! without a panic, in a typed experiment or in located problems (then printed, as text
//! and as JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(problems) = scalectl_chaos::load("experiment.yaml", &text) {
        assert!(!problems.is_empty(), "a refused experiment names at least one problem");
        for p in &problems {
            let _ = p.to_string();
            let _ = serde_json::to_string(&p.to_json());
        }
    }
});
