//! The fuzz targets of `fuzz/` as a plain test: every file of their corpus, then
//! seeded random mutations of it, through the same checks (`wharf_router::fuzzing`).
//! The real fuzzer explores far more; this keeps the checks and the corpus honest in
//! every `cargo test`.

use std::path::PathBuf;

use wharf_router::fuzzing::{check_request_head, check_routing};

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus in {}", dir.display());
    files
        .iter()
        .map(|f| std::fs::read(f).expect("read"))
        .collect()
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A few random edits: flip, insert or delete bytes, or splice in a token that
/// matters to HTTP.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    const TOKENS: [&[u8]; 8] = [
        b"\r\n",
        b":",
        b"Host: ",
        b"Connection: ",
        b",",
        b".",
        b"/",
        b"\x00",
    ];
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(4) {
            0 if at < out.len() => out[at] ^= 1 << rng.below(8),
            1 => out.insert(at, rng.next() as u8),
            2 if at < out.len() => {
                out.remove(at);
            }
            _ => {
                let token = TOKENS[rng.below(TOKENS.len())];
                out.splice(at..at, token.iter().copied());
            }
        }
    }
    out
}

fn run(target: &str, check: fn(&[u8]), rounds: usize) {
    let seeds = corpus(target);
    let mut rng = Rng(0x005E_ED0F_3A2F);
    for seed in &seeds {
        check(seed);
    }
    for i in 0..rounds {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        let outcome = std::panic::catch_unwind(|| check(&input));
        assert!(outcome.is_ok(), "{target}: failing input {input:?}");
    }
}

#[test]
fn request_head_corpus_and_mutations() {
    run("request_head", check_request_head, 5_000);
}

#[test]
fn routing_corpus_and_mutations_match_the_model() {
    run("routing", check_routing, 5_000);
}

#[test]
fn routing_random_tables_match_the_model() {
    let mut rng = Rng(0xC0FF_EE00_1234);
    for _ in 0..2_000 {
        let len = rng.below(120);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check_routing(&bytes);
    }
}
