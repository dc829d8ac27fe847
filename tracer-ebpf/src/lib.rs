//! Empty on purpose: this library target only exists so that `tracer-user` can list the eBPF
//! crate as a build-dependency, which makes cargo rebuild the daemon when the probes change.
#![no_std]
