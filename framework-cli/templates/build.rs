// The build script `ovation new` gives an Ovation app.
//
// It links the app's binaries with packed relative relocations (`-z pack-relative-relocs`,
// DT_RELR) where the C library's loader reads them: glibc 2.36 and later. A position-independent
// Rust binary holds tens of thousands of relative relocations, one for each pointer in its
// vtables and tables; as 24-byte RELA entries they take over a megabyte that the loader reads
// at every start and that stays resident, and as RELR bitmaps a few dozen kilobytes. Elsewhere
// (another libc, an older glibc, a cross build, where the host's glibc says nothing of the
// target's) the binary is linked as Rust links it by default.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if let Some(flag) = relr_link_arg() {
        println!("cargo:rustc-link-arg-bins={flag}");
    }
}

/// The linker flag for packed relative relocations, when the binary will run on this host's
/// glibc and that glibc loads them.
fn relr_link_arg() -> Option<&'static str> {
    let target = std::env::var("TARGET").ok()?;
    let host = std::env::var("HOST").ok()?;
    if target != host || !target.ends_with("-linux-gnu") {
        return None;
    }
    // `glibc 2.36`
    let out = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
    let version: (u32, u32) = (major.parse().ok()?, minor.parse().ok()?);
    (version >= (2, 36)).then_some("-Wl,-z,pack-relative-relocs")
}
