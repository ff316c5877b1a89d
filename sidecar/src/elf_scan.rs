//! Checks an eBPF object for what strict JITs refuse next to tail calls.
//!
//! JITs without subprog-tailcall support (arm64 before 6.0, among others)
//! reject a program that both tail-calls and contains a bpf-to-bpf call.
//! LLVM creates such calls on its own when it lowers a copy or a zeroing to
//! `memcpy`/`memmove`/`memset`, so the built object is checked, not the source.

use std::collections::BTreeMap;

use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SectionKind, SymbolKind};

const BPF_INSN_SIZE: u64 = 8;
/// `BPF_JMP | BPF_CALL`.
const OPCODE_CALL: u8 = 0x85;
/// `src_reg` of a call to another BPF function rather than a helper.
const BPF_PSEUDO_CALL: u8 = 1;
/// Libcalls LLVM may emit for memory intrinsics.
pub const MEM_SYMBOLS: [&str; 5] = ["memcpy", "memmove", "memset", "memcmp", "bcmp"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PseudoCall {
    /// Instruction slot within the program.
    pub slot: u64,
    /// The called function, when the object names it.
    pub target: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ProgramReport {
    pub name: String,
    pub section: String,
    /// Instruction slots (a 64-bit immediate load takes two).
    pub instructions: u64,
    pub pseudo_calls: Vec<PseudoCall>,
}

#[derive(Debug, Clone)]
pub struct ObjectReport {
    pub programs: Vec<ProgramReport>,
    /// Every symbol in the object named like a memory libcall.
    pub mem_symbols: Vec<String>,
}

impl ObjectReport {
    /// One line per problem; empty when the object is fit for strict JITs.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for program in &self.programs {
            for call in &program.pseudo_calls {
                problems.push(format!(
                    "program `{}` (section {}) makes a bpf-to-bpf call to `{}` at instruction {}",
                    program.name,
                    program.section,
                    call.target.as_deref().unwrap_or("<unnamed function>"),
                    call.slot
                ));
            }
        }
        for symbol in &self.mem_symbols {
            problems.push(format!("the object contains the symbol `{symbol}`"));
        }
        problems
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("not a readable ELF object: {0}")]
    Parse(#[from] object::Error),
    #[error("the object contains no program functions")]
    NoPrograms,
}

/// Scans every function in every executable section.
pub fn scan(elf: &[u8]) -> Result<ObjectReport, ScanError> {
    let file = object::File::parse(elf)?;
    let mem_symbols = file
        .symbols()
        .filter_map(|s| s.name().ok().map(str::to_owned))
        .filter(|name| MEM_SYMBOLS.contains(&name.as_str()))
        .collect();

    let mut programs = Vec::new();
    for section in file.sections().filter(|s| s.kind() == SectionKind::Text) {
        let section_name = section.name().unwrap_or("?").to_owned();
        let code = section.data()?;
        let call_targets: BTreeMap<u64, String> = section
            .relocations()
            .filter_map(|(offset, reloc)| match reloc.target() {
                RelocationTarget::Symbol(index) => {
                    let name = file.symbol_by_index(index).ok()?.name().ok()?.to_owned();
                    Some((offset, name))
                }
                _ => None,
            })
            .collect();
        let functions: Vec<_> = file
            .symbols()
            .filter(|s| s.section_index() == Some(section.index()) && s.kind() == SymbolKind::Text)
            .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_owned())))
            .collect();
        let function_at = |offset: u64| {
            functions
                .iter()
                .find(|(start, size, _)| (*start..start + size).contains(&offset))
                .map(|(_, _, name)| name.clone())
        };

        for (start, size, name) in &functions {
            let mut pseudo_calls = Vec::new();
            let end = (start + size).min(code.len() as u64);
            let mut offset = *start;
            while offset + BPF_INSN_SIZE <= end {
                let insn = &code[offset as usize..(offset + BPF_INSN_SIZE) as usize];
                if insn[0] == OPCODE_CALL && insn[1] >> 4 == BPF_PSEUDO_CALL {
                    let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]) as i64;
                    let target = call_targets.get(&offset).cloned().or_else(|| {
                        let dest = offset as i64 + (imm + 1) * BPF_INSN_SIZE as i64;
                        u64::try_from(dest).ok().and_then(function_at)
                    });
                    pseudo_calls.push(PseudoCall {
                        slot: (offset - start) / BPF_INSN_SIZE,
                        target,
                    });
                }
                offset += BPF_INSN_SIZE;
            }
            programs.push(ProgramReport {
                name: name.clone(),
                section: section_name.clone(),
                instructions: size / BPF_INSN_SIZE,
                pseudo_calls,
            });
        }
    }
    if programs.is_empty() {
        return Err(ScanError::NoPrograms);
    }
    Ok(ObjectReport {
        programs,
        mem_symbols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_an_object() {
        assert!(matches!(scan(b"not an elf"), Err(ScanError::Parse(_))));
    }

    #[test]
    fn a_clean_report_has_no_problems() {
        let report = ObjectReport {
            programs: vec![ProgramReport {
                name: "fast_path".into(),
                section: "xdp".into(),
                instructions: 10,
                pseudo_calls: vec![],
            }],
            mem_symbols: vec![],
        };
        assert!(report.problems().is_empty());
    }

    #[test]
    fn problems_name_the_program_and_the_symbol() {
        let report = ObjectReport {
            programs: vec![ProgramReport {
                name: "finalize".into(),
                section: "xdp".into(),
                instructions: 10,
                pseudo_calls: vec![PseudoCall {
                    slot: 3,
                    target: Some("memmove".into()),
                }],
            }],
            mem_symbols: vec!["memmove".into()],
        };
        let problems = report.problems().join("\n");
        assert!(problems.contains("`finalize`"), "{problems}");
        assert!(problems.contains("`memmove`"), "{problems}");
    }
}
