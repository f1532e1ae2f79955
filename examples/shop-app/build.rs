// `database!` embeds the migration files at compile time; cargo does not know to rebuild when a
// new file appears in a migrations folder. Watching the source folder makes it: any change
// under src/ (a new `.up.sql` included) reruns this script and so rebuilds the crate.
fn main() {
    println!("cargo:rerun-if-changed=src");
}
