//! `BENCH_MAX_GAP`, shared by the poll and e2e benches: what merging read requests saves.

/// Sets `max_gap_registers` on every `[[devices]]` of a simulator-written config when
/// `BENCH_MAX_GAP` is set and not empty. 32 merges the chint-dtsu666 profile's four read
/// requests into two; the simulator answers the unmapped registers between them with 0.
pub(crate) fn apply(config: String) -> String {
    match std::env::var("BENCH_MAX_GAP") {
        Ok(gap) if !gap.is_empty() => config.replace(
            "[[devices]]\n",
            &format!("[[devices]]\nmax_gap_registers = {gap}\n"),
        ),
        _ => config,
    }
}
