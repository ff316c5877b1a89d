//! Weighted ECMP groups as bucket tables.
//!
//! A group of up to `ECMP_MAX_LEGS` legs becomes `ECMP_BUCKETS` buckets, each
//! naming one leg's nexthop id; a leg gets buckets in proportion to its
//! weight (largest-remainder rounding, every leg at least one). The datapath
//! picks `buckets[bucket_of(flow_hash, bucket_count)]`, so the share of flows
//! a leg receives is its share of buckets.

use pf_common::{
    hash::bucket_of,
    maps::{ECMP_BUCKETS, ECMP_MAX_LEGS},
    EcmpGroup,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leg {
    pub nexthop_id: u32,
    /// Relative weight, at least 1.
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EcmpError {
    #[error("an ECMP group needs at least one leg")]
    Empty,
    #[error("an ECMP group has at most {ECMP_MAX_LEGS} legs, got {0}")]
    TooManyLegs(usize),
    #[error("leg weights must be at least 1")]
    ZeroWeight,
}

/// Builds the bucket table for `legs`.
pub fn build_group(legs: &[Leg]) -> Result<EcmpGroup, EcmpError> {
    if legs.is_empty() {
        return Err(EcmpError::Empty);
    }
    if legs.len() > ECMP_MAX_LEGS {
        return Err(EcmpError::TooManyLegs(legs.len()));
    }
    if legs.iter().any(|l| l.weight == 0) {
        return Err(EcmpError::ZeroWeight);
    }
    let total: u64 = legs.iter().map(|l| l.weight as u64).sum();
    let buckets = ECMP_BUCKETS as u64;
    // Every leg gets one bucket; the rest go by weight, largest remainder first.
    let spare = buckets - legs.len() as u64;
    let mut shares: Vec<(usize, u64, u64)> = legs
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let exact = spare * l.weight as u64;
            (i, 1 + exact / total, exact % total)
        })
        .collect();
    let assigned: u64 = shares.iter().map(|s| s.1).sum();
    let mut by_remainder: Vec<usize> = (0..shares.len()).collect();
    by_remainder.sort_by(|&a, &b| shares[b].2.cmp(&shares[a].2).then(a.cmp(&b)));
    for &i in by_remainder.iter().take((buckets - assigned) as usize) {
        shares[i].1 += 1;
    }
    let mut group = EcmpGroup {
        bucket_count: ECMP_BUCKETS as u32,
        leg_count: legs.len() as u32,
        ..Default::default()
    };
    // Interleave legs across the table so no leg owns one contiguous run.
    let mut remaining: Vec<u64> = shares.iter().map(|s| s.1).collect();
    let mut bucket = 0;
    while bucket < ECMP_BUCKETS {
        for (i, leg) in legs.iter().enumerate() {
            if remaining[i] > 0 && bucket < ECMP_BUCKETS {
                group.buckets[bucket] = leg.nexthop_id;
                remaining[i] -= 1;
                bucket += 1;
            }
        }
    }
    Ok(group)
}

/// The nexthop id the datapath picks for a flow hash.
pub fn pick(group: &EcmpGroup, hash: u32) -> Option<u32> {
    if group.bucket_count == 0 || group.bucket_count as usize > ECMP_BUCKETS {
        return None;
    }
    Some(group.buckets[bucket_of(hash, group.bucket_count) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(group: &EcmpGroup, id: u32) -> usize {
        group.buckets.iter().filter(|&&b| b == id).count()
    }

    #[test]
    fn equal_weights_share_the_buckets_evenly() {
        let legs: Vec<Leg> = (1..=4)
            .map(|id| Leg {
                nexthop_id: id,
                weight: 1,
            })
            .collect();
        let group = build_group(&legs).unwrap();
        for id in 1..=4 {
            assert_eq!(count(&group, id), 64);
        }
    }

    #[test]
    fn weights_set_the_share_of_buckets() {
        let group = build_group(&[
            Leg {
                nexthop_id: 7,
                weight: 3,
            },
            Leg {
                nexthop_id: 9,
                weight: 1,
            },
        ])
        .unwrap();
        assert_eq!(count(&group, 7), 192);
        assert_eq!(count(&group, 9), 64);
    }

    #[test]
    fn every_leg_of_a_lopsided_group_keeps_at_least_one_bucket() {
        let mut legs = vec![Leg {
            nexthop_id: 1,
            weight: 10_000,
        }];
        legs.extend((2..=64).map(|id| Leg {
            nexthop_id: id,
            weight: 1,
        }));
        let group = build_group(&legs).unwrap();
        for id in 1..=64 {
            assert!(count(&group, id) >= 1, "leg {id} lost all buckets");
        }
        assert_eq!(group.buckets.iter().filter(|&&b| b == 0).count(), 0);
    }

    #[test]
    fn groups_outside_the_limits_are_refused() {
        assert_eq!(build_group(&[]), Err(EcmpError::Empty));
        let legs: Vec<Leg> = (1..=65)
            .map(|id| Leg {
                nexthop_id: id,
                weight: 1,
            })
            .collect();
        assert_eq!(build_group(&legs), Err(EcmpError::TooManyLegs(65)));
        assert_eq!(
            build_group(&[Leg {
                nexthop_id: 1,
                weight: 0
            }]),
            Err(EcmpError::ZeroWeight)
        );
    }
}
