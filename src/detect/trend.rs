//! Placeholder until the model lands.
#![allow(missing_docs, unreachable_pub)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Rising,
    Falling,
}
#[derive(Debug, Clone)]
pub struct TrendParams {
    pub window_ms: i64,
    pub buckets: u16,
}
#[derive(Debug, Clone)]
pub struct TrendModel {
    p: TrendParams,
}
impl TrendModel {
    pub fn new(p: TrendParams) -> Self {
        Self { p }
    }
    pub fn update(&mut self, _ts: i64, _v: f64) {
        let _ = &self.p;
    }
    pub fn time_to(&self, _now: i64, _l: f64, _d: Direction) -> Option<i64> {
        None
    }
    pub fn fitted(&self, _now: i64) -> Option<f64> {
        None
    }
}
