//! Placeholder until the model lands.
#![allow(missing_docs, unreachable_pub)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Season {
    None,
    HourOfDay,
    HourOfWeek,
}
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyParams {
    pub learn_samples: u32,
    pub warmup_samples: u32,
    pub season: Season,
    pub min_sigma: f64,
}
impl Default for AnomalyParams {
    fn default() -> Self {
        Self {
            learn_samples: 1440,
            warmup_samples: 60,
            season: Season::None,
            min_sigma: 0.0,
        }
    }
}
#[derive(Debug, Clone)]
pub struct AnomalyModel {
    p: AnomalyParams,
}
#[derive(Debug, Clone, Copy)]
pub struct Score {
    pub score: f64,
    pub expected: f64,
}
impl AnomalyModel {
    pub fn new(p: AnomalyParams) -> Self {
        Self { p }
    }
    pub fn update(&mut self, _ts: i64, _b: u16, _v: f64) -> Option<Score> {
        let _ = &self.p;
        None
    }
}
