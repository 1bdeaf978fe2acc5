//! A manifest as `scalectl up --manifest BASE -f OVERLAY --set A=B …` loads it: the
//! input is the base text, then, after each NUL byte, the overlay and one `--set`
//! assignment per part. Loading must end, without a panic, in a typed manifest (whose
//! topology is then expanded, as every command does) or in located problems (which are
//! then printed, as text and as JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scalectl_core::{Sources, Topology};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let mut sources = Sources::new("manifest.yaml", parts.next().unwrap_or_default());
    if let Some(overlay) = parts.next() {
        sources.overlay("overlay.yaml", overlay);
    }
    for assignment in parts {
        sources.set(assignment);
    }
    match sources.load() {
        Ok(manifest) => {
            let _ = Topology::from_manifest(&manifest);
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "a refused manifest names at least one problem");
            for p in &problems {
                let _ = p.to_string();
                let _ = serde_json::to_string(&p.to_json());
            }
        }
    }
});
