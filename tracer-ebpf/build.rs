use std::path::PathBuf;

fn main() {
    // The eBPF object is linked by bpf-linker; say clearly what to run when it is missing
    // instead of panicking deep inside aya-build.
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => {
            let hint = PathBuf::from("cargo xtask setup");
            println!(
                "cargo:warning=bpf-linker not found on PATH; run `{}` first",
                hint.display()
            );
        }
    }
}
