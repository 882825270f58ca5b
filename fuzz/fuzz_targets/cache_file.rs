//! Cache files whose records come from the fuzzer: every field reader of
//! `Cache::load` (lengths, names, values, statuses, versions, durations,
//! tags, dependency edges) and the store it fills. Nothing may panic, and
//! the cache's accounting stays exact whatever loads.
//!
//! Input: record payloads, each after its length (two bytes,
//! little-endian; the last one takes what is left); the target frames
//! each with its length and checksum (the file's) after a header a
//! default cache accepts, so the fuzzer reaches the readers rather than
//! the checksum. The corpus starts from a real file's records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_optimizer::cache::Cache;

/// The file's checksum, as `Cache::save` writes it (`persist/format.rs`).
fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let step = |hash: u64, word: u64| (hash ^ word).rotate_left(23).wrapping_mul(K);
    let mut words = bytes.chunks_exact(8);
    let mut hash = 0xcbf2_9ce4_8422_2325;
    for word in &mut words {
        hash = step(hash, u64::from_le_bytes(word.try_into().unwrap()));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    hash = step(hash, u64::from_le_bytes(tail));
    step(hash, bytes.len() as u64)
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let cache = Cache::builder().max_bytes(1 << 20).sweep_interval(None).build().unwrap();
        // An empty cache's file: the header with this cache's fingerprint,
        // then the end marker (12 bytes), which goes after the records.
        let mut file = Vec::new();
        cache.save(&mut file).unwrap();
        let end = file.split_off(file.len() - 12);
        let mut payloads = Vec::new();
        let mut rest = data;
        while rest.len() >= 2 {
            let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
            payloads.push(&rest[2..2 + len]);
            rest = &rest[2 + len..];
        }
        for payload in payloads {
            file.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            file.extend_from_slice(&checksum(payload).to_le_bytes());
            file.extend_from_slice(payload);
        }
        file.extend_from_slice(&end);
        let _ = cache.load(&file[..]);
        let audit = cache.audit();
        assert!(audit.is_clean(), "{audit:?}");
        let _ = cache.save(std::io::sink());
    });
});
