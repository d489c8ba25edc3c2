//! Read plans: a device's points coalesced into the fewest Modbus requests (docs/design.md §3).
//!
//! Pure. Invariants, checked by property tests: no request exceeds its limit (125 registers or
//! 2000 bits by default), every point is covered by exactly one request of its own table, and
//! a gap is bridged only when it is at most the configured size.

use super::spec::{Function, Point};

/// Request size limits of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Registers per request (≤ 125).
    pub max_registers: u16,
    /// Bits per request (≤ 2000).
    pub max_bits: u16,
    /// Unused registers that may be bridged.
    pub max_gap_registers: u16,
    /// Unused bits that may be bridged.
    pub max_gap_bits: u16,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_registers: 125,
            max_bits: 2000,
            max_gap_registers: 16,
            max_gap_bits: 64,
        }
    }
}

/// Where a point's data sits in a request's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Index into the device's points.
    pub point: usize,
    /// Registers (or bits) from the request's start.
    pub offset: u16,
}

/// One Modbus read transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// Table.
    pub function: Function,
    /// First address.
    pub address: u16,
    /// Registers or bits.
    pub count: u16,
    /// The points it carries.
    pub slots: Vec<Slot>,
    /// Whether it spans addresses no point uses.
    pub bridged: bool,
}

/// The requests of one device cycle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadPlan {
    /// In the order they are sent.
    pub requests: Vec<ReadRequest>,
}

/// What [`ReadPlan::split`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The request was replaced by this many smaller ones.
    Into(usize),
    /// It holds one point (or one address run) and cannot shrink: the exception is the point's.
    Unsplittable,
}

impl ReadPlan {
    /// Coalesces `points` within `limits`.
    pub fn build(points: &[Point], limits: RequestLimits) -> Self {
        let indices: Vec<usize> = (0..points.len()).collect();
        Self {
            requests: coalesce(points, &indices, limits),
        }
    }

    /// Splits request `index` after the device refused it with "illegal data address":
    /// a bridged request becomes its gap-free runs, a gap-free one becomes one request per point.
    pub fn split(&mut self, index: usize, points: &[Point]) -> Split {
        let Some(request) = self.requests.get(index) else {
            return Split::Unsplittable;
        };
        let members: Vec<usize> = request.slots.iter().map(|s| s.point).collect();
        let replacement = if request.bridged {
            let no_gaps = RequestLimits {
                max_registers: request.count,
                max_bits: request.count,
                max_gap_registers: 0,
                max_gap_bits: 0,
            };
            coalesce(points, &members, no_gaps)
        } else {
            let mut singles: Vec<ReadRequest> = Vec::new();
            for &p in &members {
                let point = &points[p];
                // Points that share an address (bits of one register) stay together.
                if let Some(r) = singles
                    .iter_mut()
                    .find(|r| r.address == point.address && r.count == point.width())
                {
                    r.slots.push(Slot {
                        point: p,
                        offset: 0,
                    });
                } else {
                    singles.push(ReadRequest {
                        function: point.function,
                        address: point.address,
                        count: point.width(),
                        slots: vec![Slot {
                            point: p,
                            offset: 0,
                        }],
                        bridged: false,
                    });
                }
            }
            singles
        };
        if replacement.len() <= 1 {
            return Split::Unsplittable;
        }
        let n = replacement.len();
        self.requests.splice(index..=index, replacement);
        Split::Into(n)
    }

    /// Registers and bits read per cycle.
    pub fn total_count(&self) -> u32 {
        self.requests.iter().map(|r| u32::from(r.count)).sum()
    }
}

fn coalesce(points: &[Point], members: &[usize], limits: RequestLimits) -> Vec<ReadRequest> {
    let mut sorted: Vec<usize> = members.to_vec();
    sorted.sort_by_key(|&i| {
        (
            points[i].function,
            points[i].address,
            u16::MAX - points[i].width(),
        )
    });
    let mut out: Vec<ReadRequest> = Vec::new();
    let mut end: u32 = 0;
    for i in sorted {
        let p = &points[i];
        let (max, max_gap) = if p.function.is_bits() {
            (limits.max_bits, limits.max_gap_bits)
        } else {
            (limits.max_registers, limits.max_gap_registers)
        };
        let start = u32::from(p.address);
        let p_end = start + u32::from(p.width());
        if let Some(cur) = out.last_mut() {
            let cur_start = u32::from(cur.address);
            let new_end = end.max(p_end);
            let gap = start.saturating_sub(end);
            if cur.function == p.function
                && new_end - cur_start <= u32::from(max)
                && gap <= u32::from(max_gap)
            {
                cur.bridged |= gap > 0;
                end = new_end;
                cur.count = u16::try_from(end - cur_start).unwrap_or(u16::MAX);
                cur.slots.push(Slot {
                    point: i,
                    offset: u16::try_from(start - cur_start).unwrap_or(0),
                });
                continue;
            }
        }
        end = p_end;
        out.push(ReadRequest {
            function: p.function,
            address: p.address,
            count: p.width(),
            slots: vec![Slot {
                point: i,
                offset: 0,
            }],
            bridged: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Codec, DataType};
    use crate::model::Name;
    use proptest::prelude::*;

    fn point(function: Function, address: u16, ty: DataType) -> Point {
        Point {
            name: Name::new(&format!("p{address}")).unwrap(),
            function,
            address,
            codec: Codec::plain(ty),
            unit: String::new(),
            description: String::new(),
            report: crate::process::report::Report::default(),
            write: None,
        }
    }

    #[test]
    fn adjacent_registers_become_one_request() {
        let pts = vec![
            point(Function::Holding, 0, DataType::F32),
            point(Function::Holding, 2, DataType::F32),
            point(Function::Holding, 4, DataType::U16),
        ];
        let plan = ReadPlan::build(&pts, RequestLimits::default());
        assert_eq!(plan.requests.len(), 1);
        let r = &plan.requests[0];
        assert_eq!((r.address, r.count, r.bridged), (0, 5, false));
        assert_eq!(
            r.slots.iter().map(|s| s.offset).collect::<Vec<_>>(),
            [0, 2, 4]
        );
    }

    #[test]
    fn gaps_are_bridged_only_up_to_the_limit() {
        let pts = vec![
            point(Function::Input, 0, DataType::U16),
            point(Function::Input, 10, DataType::U16),
            point(Function::Input, 40, DataType::U16),
        ];
        let limits = RequestLimits {
            max_gap_registers: 9,
            ..RequestLimits::default()
        };
        let plan = ReadPlan::build(&pts, limits);
        assert_eq!(plan.requests.len(), 2);
        assert_eq!((plan.requests[0].address, plan.requests[0].count), (0, 11));
        assert!(plan.requests[0].bridged);
        assert_eq!(plan.requests[1].address, 40);
        let tight = RequestLimits {
            max_gap_registers: 8,
            ..limits
        };
        assert_eq!(ReadPlan::build(&pts, tight).requests.len(), 3);
    }

    #[test]
    fn requests_never_exceed_125_registers() {
        let pts: Vec<Point> = (0..100)
            .map(|i| point(Function::Holding, i * 2, DataType::F32))
            .collect();
        let plan = ReadPlan::build(&pts, RequestLimits::default());
        assert_eq!(plan.requests.len(), 2);
        assert_eq!(plan.requests[0].count, 124);
        assert_eq!(plan.requests[1].count, 76);
    }

    #[test]
    fn functions_never_share_a_request() {
        let pts = vec![
            point(Function::Holding, 0, DataType::U16),
            point(Function::Input, 1, DataType::U16),
            point(Function::Coil, 0, DataType::Bool),
            point(Function::Coil, 1999, DataType::Bool),
            point(Function::Coil, 2000, DataType::Bool),
        ];
        let limits = RequestLimits {
            max_gap_bits: 2000,
            ..RequestLimits::default()
        };
        let plan = ReadPlan::build(&pts, limits);
        let coils: Vec<_> = plan
            .requests
            .iter()
            .filter(|r| r.function == Function::Coil)
            .collect();
        assert_eq!(coils.len(), 2, "2001 bits need two requests");
        assert_eq!(coils[0].count, 2000);
        assert_eq!(plan.requests.len(), 4);
    }

    #[test]
    fn illegal_address_on_a_bridged_request_splits_into_gap_free_runs_then_points() {
        let pts = vec![
            point(Function::Holding, 0, DataType::F32),
            point(Function::Holding, 2, DataType::F32),
            point(Function::Holding, 10, DataType::U16),
        ];
        let mut plan = ReadPlan::build(&pts, RequestLimits::default());
        assert_eq!(plan.requests.len(), 1);
        assert_eq!(plan.split(0, &pts), Split::Into(2));
        assert_eq!(
            plan.requests
                .iter()
                .map(|r| (r.address, r.count, r.bridged))
                .collect::<Vec<_>>(),
            [(0, 4, false), (10, 1, false)]
        );
        assert_eq!(plan.split(0, &pts), Split::Into(2));
        assert_eq!(plan.requests.len(), 3);
        assert_eq!(plan.split(0, &pts), Split::Unsplittable);
        assert_eq!(plan.split(2, &pts), Split::Unsplittable);
    }

    fn arbitrary_points() -> impl Strategy<Value = Vec<Point>> {
        let one = (
            0u16..4,
            0u16..600,
            prop::sample::select(vec![DataType::U16, DataType::F32, DataType::F64]),
        )
            .prop_map(|(f, a, t)| match f {
                0 => point(Function::Coil, a * 5, DataType::Bool),
                1 => point(Function::DiscreteInput, a, DataType::Bool),
                2 => point(Function::Holding, a, t),
                _ => point(Function::Input, a, t),
            });
        prop::collection::vec(one, 1..80)
    }

    proptest! {
        #[test]
        fn every_point_is_covered_once_within_limits(pts in arbitrary_points(), regs in 4u16..=125, gap in 0u16..40) {
            let limits = RequestLimits { max_registers: regs, max_bits: 2000, max_gap_registers: gap, max_gap_bits: gap };
            let mut plan = ReadPlan::build(&pts, limits);
            // Splitting must keep the invariants too.
            if !plan.requests.is_empty() { let _ = plan.split(0, &pts); }
            let mut seen = vec![0u32; pts.len()];
            for r in &plan.requests {
                let max = if r.function.is_bits() { 2000 } else { regs };
                prop_assert!(r.count <= max, "request of {} over {}", r.count, max);
                for s in &r.slots {
                    seen[s.point] += 1;
                    let p = &pts[s.point];
                    prop_assert_eq!(p.function, r.function);
                    prop_assert_eq!(u32::from(r.address) + u32::from(s.offset), u32::from(p.address));
                    prop_assert!(s.offset + p.width() <= r.count);
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
        }
    }
}
