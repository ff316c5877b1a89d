use std::{collections::BTreeMap, net::Ipv6Addr};

use super::*;
use crate::test_rng::Rng;

fn nh(id: u32) -> RouteAction {
    RouteAction::new(RouteKind::Nexthop, id)
}

fn net(s: &str) -> Ipv6Net {
    s.parse().unwrap()
}

fn addr(s: &str) -> u128 {
    u128::from(s.parse::<Ipv6Addr>().unwrap())
}

/// The reference: longest match over a plain list of prefixes.
fn reference(routes: &BTreeMap<Ipv6Net, RouteAction>, a: u128) -> RouteAction {
    routes
        .iter()
        .filter(|(p, _)| p.contains(&Ipv6Addr::from(a)))
        .max_by_key(|(p, _)| p.prefix_len())
        .map(|(_, a)| *a)
        .unwrap_or(RouteAction::MISS)
}

fn table(nodes: u32, leaves: u32) -> V6Trie<VecV6Store> {
    V6Trie::new(VecV6Store::new(nodes, leaves))
}

#[test]
fn a_48_answers_for_its_addresses_only() {
    let mut t = table(64, 64);
    t.insert(net("2001:db8:1::/48"), nh(1)).unwrap();
    assert_eq!(t.lookup(addr("2001:db8:1::1")), nh(1));
    assert_eq!(t.lookup(addr("2001:db8:1:ffff:ffff:ffff:ffff:ffff")), nh(1));
    assert_eq!(t.lookup(addr("2001:db8:2::1")), RouteAction::MISS);
    assert_eq!(t.lookup(addr("2001:db8::1")), RouteAction::MISS);
}

#[test]
fn longer_prefixes_win_and_short_ones_cover_through_the_slot() {
    let mut t = table(256, 256);
    t.insert(net("2001:db8:1:2::/64"), nh(3)).unwrap();
    t.insert(net("2001:db8::/32"), nh(2)).unwrap();
    t.insert(net("2000::/3"), nh(1)).unwrap();
    t.insert(net("2001:db8:1:2::7/128"), nh(4)).unwrap();
    assert_eq!(t.lookup(addr("2001:db8:1:2::7")), nh(4));
    assert_eq!(t.lookup(addr("2001:db8:1:2::8")), nh(3));
    assert_eq!(t.lookup(addr("2001:db8:1:3::8")), nh(2));
    assert_eq!(t.lookup(addr("2001:db9::1")), nh(1));
    // 2001:db8::/32 is a leaf, 2000::/3 the slot's cover.
    assert_eq!(t.lookup(addr("2001:0000::1")), nh(1));
    t.remove(net("2000::/3"));
    assert_eq!(t.lookup(addr("2001:0000::1")), RouteAction::MISS);
    assert_eq!(t.lookup(addr("2001:db8:1:3::8")), nh(2));
    t.remove(net("2001:db8::/32"));
    assert_eq!(t.lookup(addr("2001:db8:1:3::8")), RouteAction::MISS);
    assert_eq!(t.lookup(addr("2001:db8:1:2::7")), nh(4));
}

#[test]
fn the_last_long_prefix_gone_leaves_the_slot_to_its_cover_and_frees_everything() {
    let mut t = table(64, 64);
    t.insert(net("2001:db8::/16"), nh(1)).unwrap();
    t.insert(net("2001:db8:1::/48"), nh(2)).unwrap();
    assert!(t.nodes_in_use() > 0);
    t.remove(net("2001:db8:1::/48"));
    assert_eq!(t.lookup(addr("2001:db8:1::1")), nh(1));
    assert_eq!(
        t.store().head(slot_of(addr("2001:db8:1::"))),
        nh(1).0,
        "no trie left under the slot"
    );
    t.reclaim();
    t.reclaim();
    assert_eq!((t.nodes_in_use(), t.leaves_in_use()), (0, 0));
}

#[test]
fn replaced_nodes_wait_a_full_grace_period() {
    let mut t = table(64, 64);
    t.insert(net("2001:db8:1::/48"), nh(1)).unwrap();
    // Four actions in the node: it reads a leaf array.
    t.insert(net("2001:db8:1:4000::/50"), nh(3)).unwrap();
    t.insert(net("2001:db8:1:8000::/50"), nh(4)).unwrap();
    let before = (t.nodes.next, t.leaves.next);
    t.insert(net("2001:db8:1::/48"), nh(2)).unwrap();
    t.reclaim();
    // Nothing replaced is free yet: a reader may still be on the old path.
    assert!(t.nodes.free.iter().all(Vec::is_empty));
    t.reclaim();
    assert!(t.nodes.free.iter().any(|f| !f.is_empty()));
    assert!(t.nodes.next > before.0 && t.leaves.next > before.1);
    assert_eq!(t.lookup(addr("2001:db8:1::1")), nh(2));
}

#[test]
fn when_the_arrays_run_out_the_slot_defers_to_the_kernel_until_room_returns() {
    let mut t = table(12, 12);
    t.insert(net("2001:db8::/18"), nh(9)).unwrap();
    t.insert(net("2001:db8:1::/48"), nh(1)).unwrap();
    let mut refused = None;
    for i in 2..40u32 {
        let prefix = Ipv6Net::new(
            Ipv6Addr::from(addr("2001:db8::") | (u128::from(i) << 88)),
            48,
        )
        .unwrap();
        if let Err(err) = t.insert(prefix, nh(i)) {
            refused = Some((prefix, err));
            break;
        }
    }
    let (prefix, err) = refused.expect("twelve nodes hold fewer than 38 /48s");
    let slot = slot_of(u128::from(prefix.network()));
    assert_eq!(err, V6TrieError::OutOfSpace { prefix, slot });
    assert_eq!(
        t.deferred_slots().iter().copied().collect::<Vec<_>>(),
        [slot]
    );
    // The whole slot asks the kernel, not the /18 over it.
    assert_eq!(t.lookup(addr("2001:db8:1::1")).kind(), Some(RouteKind::Fib));
    assert_eq!(
        t.lookup(u128::from(prefix.network()) | 1).kind(),
        Some(RouteKind::Fib)
    );
    // Other slots still answer.
    t.insert(net("2001:db9:4000::/48"), nh(50)).unwrap_or(());
    // Emptying the slot and waiting a grace period gives it back.
    let all: Vec<Ipv6Net> = (1..40u32)
        .map(|i| {
            Ipv6Net::new(
                Ipv6Addr::from(addr("2001:db8::") | (u128::from(i) << 88)),
                48,
            )
            .unwrap()
        })
        .collect();
    for p in &all[1..] {
        t.remove(*p);
    }
    t.reclaim();
    t.reclaim();
    assert_eq!(t.retry_deferred(), vec![slot]);
    assert_eq!(t.lookup(addr("2001:db8:1::1")), nh(1));
    assert_eq!(t.lookup(addr("2001:db8:2::1")), nh(9));
}

#[test]
fn random_inserts_and_removes_match_a_reference_longest_prefix_match() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut t = table(1 << 20, 1 << 20);
    let mut routes = BTreeMap::new();
    // Clustered under 2001:db8::/32 with a few short prefixes, so prefixes
    // overlap at every level.
    let base = addr("2001:db8::");
    let lens = [
        0u8, 3, 16, 18, 19, 24, 29, 32, 33, 36, 40, 44, 47, 48, 48, 48, 52, 56, 60, 63, 64, 65, 96,
        127, 128,
    ];
    let random_addr = |rng: &mut Rng| {
        let low = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 32;
        // A few bits of variety per level keep neighbours close.
        base | (low & 0x0003_0003_0303_0303_0303_0303_0f0f_0f0f)
    };
    for step in 0..6000u32 {
        let len = lens[(rng.next() % lens.len() as u64) as usize];
        let prefix = Ipv6Net::new(Ipv6Addr::from(random_addr(&mut rng)), len)
            .unwrap()
            .trunc();
        if rng.next().is_multiple_of(3) && routes.contains_key(&prefix) {
            routes.remove(&prefix);
            t.remove(prefix);
        } else {
            let action = nh(step + 1);
            t.insert(prefix, action).unwrap();
            routes.insert(prefix, action);
        }
        if step.is_multiple_of(64) {
            t.reclaim();
        }
        if step.is_multiple_of(100) {
            for _ in 0..300 {
                let probe = random_addr(&mut rng);
                assert_eq!(
                    t.lookup(probe),
                    reference(&routes, probe),
                    "step {step} addr {}",
                    Ipv6Addr::from(probe)
                );
            }
            for p in routes.keys().take(50) {
                let a = u128::from(p.network());
                assert_eq!(t.lookup(a), reference(&routes, a), "step {step} {p}");
            }
        }
    }
    assert!(t.deferred_slots().is_empty());
}

#[test]
fn random_48s_take_a_bounded_number_of_nodes_and_leaves() {
    let mut rng = Rng(7);
    let mut t = table(1 << 20, 1 << 20);
    let n = 20_000u32;
    for i in 0..n {
        let a = (0x2000u128 << 112) | (u128::from(rng.next()) << 64) & ((1u128 << 125) - 1);
        t.insert(Ipv6Net::new(Ipv6Addr::from(a), 48).unwrap().trunc(), nh(i))
            .unwrap();
    }
    t.reclaim();
    t.reclaim();
    let (nodes, leaves) = (
        t.nodes_in_use() as f64 / n as f64,
        t.leaves_in_use() as f64 / n as f64,
    );
    assert!(
        nodes <= f64::from(pf_common::maps::V6_NODES_PER_ROUTE)
            && leaves <= f64::from(pf_common::maps::V6_LEAVES_PER_ROUTE),
        "{nodes:.2} nodes and {leaves:.2} leaves per random /48"
    );
}

#[test]
fn batches_rewrite_each_slot_once_and_match_the_reference() {
    let mut rng = Rng(0xdead_beef);
    let mut t = table(1 << 18, 1 << 18);
    let mut routes = BTreeMap::new();
    let base = addr("2001:db8::");
    let lens = [17u8, 20, 30, 32, 40, 44, 48, 48, 48, 56, 64, 128];
    for round in 0..30u32 {
        let mut batch = Vec::new();
        for i in 0..300u32 {
            let low = (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 32;
            let a = base | (low & 0x0000_0003_0f0f_0f0f_0101_0101_0101_0101);
            let len = lens[(rng.next() % lens.len() as u64) as usize];
            let prefix = Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc();
            if rng.next().is_multiple_of(4) {
                routes.remove(&prefix);
                batch.push((prefix, None));
            } else {
                let action = nh(round * 1000 + i + 1);
                routes.insert(prefix, action);
                batch.push((prefix, Some(action)));
            }
        }
        assert!(t.apply(batch).is_empty());
        t.reclaim();
        for p in routes.keys() {
            let a = u128::from(p.network());
            assert_eq!(t.lookup(a), reference(&routes, a), "round {round} {p}");
            let last = a | (u128::MAX >> p.prefix_len().min(127));
            assert_eq!(
                t.lookup(last),
                reference(&routes, last),
                "round {round} {p} last"
            );
        }
    }
}

#[test]
fn reclaims_made_sooner_than_the_grace_period_apart_are_skipped() {
    let mut t = table(64, 64);
    t.insert(net("2001:db8:1::/48"), nh(1)).unwrap();
    t.insert(net("2001:db8:1::/48"), nh(2)).unwrap();
    let start = std::time::Instant::now();
    t.reclaim_at(start);
    t.reclaim_at(start + RECLAIM_EVERY / 2);
    assert!(
        t.nodes.free.iter().all(Vec::is_empty),
        "two callers within the grace period free nothing"
    );
    t.reclaim_at(start + RECLAIM_EVERY);
    assert!(t.nodes.free.iter().any(|f| !f.is_empty()));
}

#[test]
fn a_lone_long_prefix_is_found_through_a_compressed_node_and_a_diverging_address_gets_the_cover() {
    use pf_common::maps::V6_TOP_BITS as TOP;
    let mut t = table(64, 64);
    let lone = addr("2001:db8:1234::");
    let flip = |bit: u32| lone ^ (1u128 << (127 - bit));
    t.insert(net("2001:db8:1234::/48"), nh(1)).unwrap();
    // The root skips four steps and is the node for the /48's last bits:
    // one node, where five were needed uncompressed.
    assert_eq!(t.nodes_in_use(), 1);
    let root = |t: &V6Trie<VecV6Store>| {
        let head = RouteAction(t.store().head(slot_of(lone)));
        t.store().node(head.index())
    };
    assert_eq!(root(&t).skip_strides(), V6_MAX_SKIP);
    assert_eq!(t.lookup(lone | 1), nh(1));
    assert_eq!(t.lookup(flip(TOP + 10)), RouteAction::MISS);
    // A cover that ends in the root's first step: the root is a plain node
    // again and its child skips three steps, answering the cover where an
    // address leaves them.
    let cover = Ipv6Net::new(Ipv6Addr::from(lone), (TOP + 4) as u8)
        .unwrap()
        .trunc();
    t.insert(cover, nh(2)).unwrap();
    t.reclaim();
    t.reclaim();
    assert_eq!(t.nodes_in_use(), 2);
    assert_eq!(root(&t).skip_strides(), 0);
    assert_eq!(t.store().node(root(&t).first_child).skip_strides(), 3);
    assert_eq!(t.lookup(lone | 1), nh(1));
    // Leaving in the first, a middle and the last left-out step, then in
    // the node's own bits.
    for bit in [TOP + 6, TOP + 14, TOP + 23, 47] {
        assert_eq!(t.lookup(flip(bit)), nh(2), "bit {bit}");
    }
    // Outside the cover, in the root's own step.
    assert_eq!(t.lookup(flip(TOP + 2)), RouteAction::MISS);
    // A neighbour parting in a middle step: both answer, and so does the
    // cover around them.
    let neighbour = Ipv6Net::new(Ipv6Addr::from(flip(TOP + 14)), 48).unwrap();
    t.insert(neighbour, nh(3)).unwrap();
    assert_eq!(t.lookup(lone | 1), nh(1));
    assert_eq!(t.lookup(flip(TOP + 14) | 1), nh(3));
    assert_eq!(t.lookup(flip(TOP + 8)), nh(2));
    t.remove(cover);
    assert_eq!(t.lookup(flip(TOP + 8)), RouteAction::MISS);
    assert_eq!(t.lookup(flip(TOP + 6)), RouteAction::MISS);
}

#[test]
fn sparse_tables_with_compressed_chains_match_the_reference_on_near_misses() {
    let mut rng = Rng(0x5eed_cafe);
    let mut t = table(1 << 16, 1 << 16);
    let mut routes = BTreeMap::new();
    // Few prefixes over wide bits: chains everywhere, cut and grown by the
    // changes, with covers of every length around them.
    let lens = [8u8, 20, 26, 33, 40, 47, 48, 48, 48, 53, 60, 64, 96, 128];
    let random_addr = |rng: &mut Rng| {
        (0x2001_0db8u128 << 96) | (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 34
    };
    for round in 0..200u32 {
        let mut batch = Vec::new();
        for i in 0..8u32 {
            let len = lens[(rng.next() % lens.len() as u64) as usize];
            let prefix = Ipv6Net::new(Ipv6Addr::from(random_addr(&mut rng)), len)
                .unwrap()
                .trunc();
            if !routes.is_empty() && rng.next().is_multiple_of(3) {
                let gone = *routes
                    .keys()
                    .nth((rng.next() % routes.len() as u64) as usize)
                    .unwrap();
                routes.remove(&gone);
                batch.push((gone, None));
            } else {
                let action = nh(round * 100 + i + 1);
                routes.insert(prefix, action);
                batch.push((prefix, Some(action)));
            }
        }
        // Half the rounds as one batch, half one change at a time.
        if round % 2 == 0 {
            assert!(t.apply(batch).is_empty());
        } else {
            for (prefix, action) in batch {
                match action {
                    Some(action) => t.insert(prefix, action).unwrap(),
                    None => t.remove(prefix),
                }
            }
        }
        t.reclaim();
        // Each prefix's first address, and addresses that leave its path
        // at one random bit: the near misses a compressed node must send
        // to its `miss`.
        for p in routes.keys() {
            let a = u128::from(p.network());
            for probe in [
                a,
                a ^ (1u128 << (rng.next() % 128)),
                a ^ (1u128 << (rng.next() % 64 + 64)),
            ] {
                assert_eq!(
                    t.lookup(probe),
                    reference(&routes, probe),
                    "round {round} {p} probe {}",
                    Ipv6Addr::from(probe)
                );
            }
        }
    }
}

#[test]
fn a_change_under_a_compressed_chain_rewrites_its_path_not_the_subtree() {
    // Every prefix inside one /32: the slot's root skips the steps down to
    // it, and the busy subtree hangs below.
    let mut rng = Rng(0x0db8);
    let mut t = table(1 << 18, 1 << 18);
    let prefix = |rng: &mut Rng| {
        let a = addr("2001:db8::") | (u128::from(rng.next()) & 0xffff_ffff) << 64;
        Ipv6Net::new(Ipv6Addr::from(a), 48).unwrap().trunc()
    };
    let batch: Vec<_> = (0..4000)
        .map(|i| (prefix(&mut rng), Some(nh(i + 1))))
        .collect();
    assert!(t.apply(batch).is_empty());
    let head = RouteAction(t.store().head(slot_of(addr("2001:db8::"))));
    assert_ne!(t.store().node(head.index()).skip_strides(), 0);
    t.reclaim();
    t.reclaim();
    let replaced = |t: &V6Trie<VecV6Store>| {
        t.quarantined
            .iter()
            .map(|span| match span {
                Span::Nodes(_, n) => *n,
                Span::Leaves(..) => 0,
            })
            .sum::<u32>()
    };
    let in_use = t.nodes_in_use();
    for i in 0..20 {
        let p = prefix(&mut rng);
        t.insert(p, nh(9000 + i)).unwrap();
        // One path: a child array of at most 64 per level.
        assert!(
            replaced(&t) <= 64 * V6_MAX_DEPTH,
            "{} nodes replaced of {in_use} for {p}",
            replaced(&t)
        );
        assert_eq!(t.lookup(u128::from(p.network())), nh(9000 + i));
        t.reclaim();
        t.reclaim();
    }
}

#[test]
fn a_node_read_while_reused_that_points_past_the_address_gives_fib_not_a_panic() {
    // What a tool reading live maps may meet: a reused node whose skip and
    // child lead back to itself, so the walk would run past bit 128.
    let mut store = VecV6Store::new(4, 4);
    let slot = slot_of(addr("2000::"));
    store.set_head(slot, RouteAction::new(RouteKind::Tbl8, 1).0);
    store.set_node(
        1,
        &pf_common::layout::V6Node {
            children: u64::MAX,
            runs: 1,
            first_child: 1,
            first_leaf: 1,
            skip: pf_common::layout::V6Node::skip_of(4, 0),
            miss: 0,
        },
    );
    assert_eq!(
        lookup_in(&store, addr("2000::")),
        RouteAction::simple(RouteKind::Fib)
    );
    // A width that is not whole steps: only a corrupt node has one.
    let mut node = store.node(1);
    node.skip = 10;
    node.children = 0;
    store.set_node(1, &node);
    assert_eq!(
        lookup_in(&store, addr("2000::")),
        RouteAction::simple(RouteKind::Fib)
    );
}

#[test]
fn nodes_read_count_the_dependent_reads_a_lookup_makes() {
    let mut t = table(256, 256);
    t.insert(net("2000::/16"), nh(9)).unwrap();
    t.insert(net("2001:db8:1::/48"), nh(1)).unwrap();
    // Alone in its /22: the slot's root is the compressed node itself.
    assert_eq!(nodes_read_in(t.store(), addr("2001:db8:1::1")), 1);
    assert_eq!(nodes_read_in(t.store(), addr("2001:db8:2::1")), 1);
    // A slot with no longer prefix answers from its head: no node.
    assert_eq!(nodes_read_in(t.store(), addr("2000:1::1")), 0);
    // A neighbour in the same /22 that parts at bit 23: a branching root,
    // then one compressed node each.
    t.insert(net("2001:c00:1::/48"), nh(2)).unwrap();
    assert_eq!(slot_of(addr("2001:c00::")), slot_of(addr("2001:db8::")));
    assert_eq!(nodes_read_in(t.store(), addr("2001:db8:1::1")), 2);
    assert_eq!(nodes_read_in(t.store(), addr("2001:c00:1::1")), 2);
    assert_eq!(lookup_in(t.store(), addr("2001:c00:1::1")), nh(2));
    // A /64 under the /48: the /48's node (bits 46 to 52) now has a child,
    // compressed over bits 52 to 58, whose own six bits end the /64.
    t.insert(net("2001:db8:1:2::/64"), nh(3)).unwrap();
    assert_eq!(nodes_read_in(t.store(), addr("2001:db8:1:2::1")), 3);
    assert_eq!(nodes_read_in(t.store(), addr("2001:db8:1:8000::1")), 2);
    assert_eq!(lookup_in(t.store(), addr("2001:db8:1:2::1")), nh(3));
    assert_eq!(lookup_in(t.store(), addr("2001:db8:1:8000::1")), nh(1));
}

#[test]
fn a_node_holds_up_to_two_actions_itself_and_moves_to_a_leaf_array_past_that() {
    let mut t = table(64, 64);
    t.insert(net("2001:db8:1::/48"), nh(1)).unwrap();
    let root = |t: &V6Trie<VecV6Store>| {
        let head = RouteAction(t.store().head(slot_of(addr("2001:db8:1::"))));
        t.store().node(head.index())
    };
    // The /48 and the slot's cover: held in the root, no leaf allocated.
    assert!(root(&t).holds_leaves());
    assert_eq!(t.leaves_in_use(), 0);
    assert_eq!(t.lookup(addr("2001:db8:1::1")), nh(1));
    assert_eq!(t.lookup(addr("2001:db8:2::1")), RouteAction::MISS);
    // A third action in the same six bits: a leaf array.
    t.insert(net("2001:db8:1:8000::/49"), nh(2)).unwrap();
    assert!(!root(&t).holds_leaves());
    assert!(t.leaves_in_use() > 0);
    assert_eq!(t.lookup(addr("2001:db8:1:8000::1")), nh(2));
    assert_eq!(t.lookup(addr("2001:db8:1::1")), nh(1));
    assert_eq!(t.lookup(addr("2001:db8:2::1")), RouteAction::MISS);
    // Gone again: back to two actions, held, and the leaves are released.
    t.remove(net("2001:db8:1:8000::/49"));
    assert!(root(&t).holds_leaves());
    assert_eq!(t.lookup(addr("2001:db8:1:8000::1")), nh(1));
    t.reclaim();
    t.reclaim();
    assert_eq!(t.leaves_in_use(), 0);
    // A child under a node that held its leaves: the parent takes an array.
    t.insert(net("2001:db8:1:2::/64"), nh(3)).unwrap();
    assert!(!root(&t).holds_leaves());
    assert_eq!(t.lookup(addr("2001:db8:1:2::1")), nh(3));
    assert_eq!(t.lookup(addr("2001:db8:1:3::1")), nh(1));
    assert_eq!(t.lookup(addr("2001:db8:2::1")), RouteAction::MISS);
}
