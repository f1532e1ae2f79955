// `database!` embeds the migration files at compile time and `static_files!` the status page's
// files; cargo does not know to rebuild when a new file appears in those folders. Watching them
// makes it: any change under src/ (a new `.up.sql` included) or public/ reruns this script and so
// rebuilds the crate.
fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=public");
}
