// The build script `ovation new` gives an app: binaries linked with packed relative relocations
// where glibc loads them.
include!("../../framework-cli/templates/build.rs");
