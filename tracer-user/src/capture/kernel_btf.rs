//! Offsets of kernel struct members, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for the eBPF programs that read kernel memory directly.

/// Where the kernel finds when the current process started:
/// `current->group_leader->start_time` (zero: unknown, state is then never judged stale).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessStartOffsets {
    /// Byte offset of `task_struct::group_leader`.
    pub task_group_leader: u32,
    /// Byte offset of `task_struct::start_time` (CLOCK_MONOTONIC ns at fork).
    pub task_start_time: u32,
}

impl ProcessStartOffsets {
    pub fn from_kernel_btf() -> Result<Self, String> {
        let btf = btf_rs::Btf::from_file("/sys/kernel/btf/vmlinux")
            .map_err(|e| format!("kernel BTF unreadable: {e}"))?;
        Ok(Self {
            task_group_leader: member_offset(&btf, "task_struct", "group_leader")?,
            task_start_time: member_offset(&btf, "task_struct", "start_time")?,
        })
    }
}

/// Byte offset of a (non-bitfield, top-level) member of a struct in the kernel's BTF.
pub(crate) fn member_offset(btf: &btf_rs::Btf, strukt: &str, member: &str) -> Result<u32, String> {
    let types = btf
        .resolve_types_by_name(strukt)
        .map_err(|e| format!("no {strukt} in the kernel BTF: {e}"))?;
    for ty in types {
        let btf_rs::Type::Struct(st) = ty else {
            continue;
        };
        for m in &st.members {
            if btf.resolve_name(m).is_ok_and(|name| name == member) {
                if m.bitfield_size().is_some_and(|bits| bits != 0)
                    || !m.bit_offset().is_multiple_of(8)
                {
                    return Err(format!("{strukt}::{member} is a bitfield"));
                }
                return Ok(m.bit_offset() / 8);
            }
        }
    }
    Err(format!("no {strukt}::{member} in the kernel BTF"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_start_offsets_come_from_the_running_kernel() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            return;
        }
        let offsets = ProcessStartOffsets::from_kernel_btf().expect("offsets");
        assert!(offsets.task_group_leader > 0 && offsets.task_group_leader.is_multiple_of(8));
        assert!(offsets.task_start_time > 0 && offsets.task_start_time.is_multiple_of(8));
        assert_ne!(offsets.task_group_leader, offsets.task_start_time);
    }
}
