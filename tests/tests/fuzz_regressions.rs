//! Replays every input the fuzzers found a crash with (`fuzz/regressions/<target>/`, kept by
//! `deploy/fuzz.sh`) and the generated seeds through the same target bodies, on stable: a
//! fixed bug stays fixed.

use std::path::Path;

#[test]
fn saved_fuzz_findings_and_seeds_stay_harmless() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let seeds = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(tests::bin("fuzz_seeds"))
        .arg(seeds.path())
        .status()
        .expect("fuzz_seeds");
    assert!(status.success());
    let mut replayed = 0;
    for (name, target) in tests::fuzz::TARGETS {
        let dirs = [fuzz.join("regressions").join(name), seeds.path().join(name)];
        for dir in dirs.iter().filter(|d| d.is_dir()) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let run = std::panic::catch_unwind(|| target(&data));
                assert!(run.is_ok(), "{name}: {} panics", path.display());
                replayed += 1;
            }
        }
    }
    // Every target has seeds, so every target ran.
    assert!(replayed >= tests::fuzz::TARGETS.len(), "{replayed}");
}
