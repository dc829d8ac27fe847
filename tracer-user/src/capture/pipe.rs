//! MCP over stdio (`--mcp-stdio on`, `tracer-ebpf/src/pipe.rs`): the kernel offsets its
//! program reads file tables and pipe inodes with, and attaching it to `raw_syscalls:sys_exit`.
//!
//! The kernel side finds the channels by itself (a pipe write that opens a JSON-RPC session,
//! then the server's standard output when it reads its first request), so user space fills no
//! map: the channels' records arrive like any connection's, under `conn_id`s that
//! `tracer_common::pipe::is_pipe_conn` recognises.

use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};

use super::kernel_btf::member_offset;

const PROGRAM: &str = "mcp_sys_exit";
const TRACEPOINT: &str = "sys_exit";

/// Byte offsets of the kernel struct members the pipe program reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipeOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    pub file_inode: u32,
    pub inode_mode: u32,
    pub inode_ino: u32,
}

impl PipeOffsets {
    pub fn from_kernel_btf() -> Result<Self, String> {
        let btf = btf_rs::Btf::from_file("/sys/kernel/btf/vmlinux")
            .map_err(|e| format!("kernel BTF unreadable: {e}"))?;
        Ok(Self {
            task_files: member_offset(&btf, "task_struct", "files")?,
            files_fdt: member_offset(&btf, "files_struct", "fdt")?,
            fdtable_max_fds: member_offset(&btf, "fdtable", "max_fds")?,
            fdtable_fd: member_offset(&btf, "fdtable", "fd")?,
            file_inode: member_offset(&btf, "file", "f_inode")?,
            inode_mode: member_offset(&btf, "inode", "i_mode")?,
            inode_ino: member_offset(&btf, "inode", "i_ino")?,
        })
    }

    /// Hands the offsets to the eBPF object about to be loaded, and turns its exec hook on.
    pub fn set_globals<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        static ENABLED: u32 = 1;
        loader
            .override_global("MCP_STDIO", &ENABLED, true)
            .override_global("TASK_FILES_OFFSET", &self.task_files, true)
            .override_global("FILES_FDT_OFFSET", &self.files_fdt, true)
            .override_global("FDTABLE_MAX_FDS_OFFSET", &self.fdtable_max_fds, true)
            .override_global("FDTABLE_FD_OFFSET", &self.fdtable_fd, true)
            .override_global("FILE_INODE_OFFSET", &self.file_inode, true)
            .override_global("INODE_MODE_OFFSET", &self.inode_mode, true)
            .override_global("INODE_INO_OFFSET", &self.inode_ino, true);
    }
}

/// Loads and attaches the pipe program. An error leaves MCP over stdio uncaptured and
/// everything else working.
pub fn attach(ebpf: &mut Ebpf) -> Result<(), String> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| format!("no program {PROGRAM} in the eBPF object"))?
        .try_into()
        .map_err(|e| format!("{PROGRAM}: {e}"))?;
    program.load().map_err(|e| format!("{PROGRAM}: {e}"))?;
    program
        .attach(TRACEPOINT)
        .map_err(|e| format!("{PROGRAM} on {TRACEPOINT}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_come_from_the_running_kernel() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            return;
        }
        let offsets = PipeOffsets::from_kernel_btf().expect("offsets");
        assert!(
            offsets.task_files > 0 && offsets.files_fdt > 0,
            "{offsets:?}"
        );
        assert!(offsets.fdtable_fd.is_multiple_of(8), "{offsets:?}");
        assert!(offsets.file_inode.is_multiple_of(8), "{offsets:?}");
        assert_ne!(offsets.inode_ino, offsets.inode_mode);
    }
}
