//! The shipped XDP object must load on JITs that cannot mix tail calls with
//! bpf-to-bpf calls: no pseudo-calls in any program, no mem* symbols at all.

use pf_sidecar::{elf_scan, EBPF_OBJECT};

#[test]
fn the_embedded_object_has_no_bpf_to_bpf_calls_and_no_mem_symbols() {
    let report = elf_scan::scan(EBPF_OBJECT).expect("the embedded object parses");
    for program in &report.programs {
        println!(
            "{:<12} section {:<6} {:>6} instructions, {} bpf-to-bpf calls",
            program.name,
            program.section,
            program.instructions,
            program.pseudo_calls.len()
        );
    }
    let problems = report.problems();
    assert!(
        problems.is_empty(),
        "strict JITs would reject this object:\n{}",
        problems.join("\n")
    );
}

#[test]
fn both_programs_are_in_the_object() {
    let report = elf_scan::scan(EBPF_OBJECT).expect("the embedded object parses");
    for name in [
        pf_common::maps::PROG_FAST_PATH,
        pf_common::maps::PROG_FINALIZE,
    ] {
        let program = report.programs.iter().find(|p| p.name == name);
        assert!(
            program.is_some_and(|p| p.instructions > 0),
            "{name} missing from the object"
        );
    }
}

#[test]
fn every_map_in_the_object_is_listed_for_pinning() {
    use object::{Object, ObjectSection, ObjectSymbol};
    let file = object::File::parse(EBPF_OBJECT).unwrap();
    let maps_section = file
        .section_by_name("maps")
        .expect("a maps section")
        .index();
    let mut in_object: Vec<&str> = file
        .symbols()
        .filter(|s| s.section_index() == Some(maps_section))
        .filter_map(|s| s.name().ok())
        .collect();
    in_object.sort();
    let mut listed = pf_common::maps::ALL.to_vec();
    listed.sort();
    assert_eq!(in_object, listed);
}
