// The same build script as the apps' (`ovation new` gives it to each): the hand-written baselines
// are linked as the Ovation apps they are measured against.
include!("../framework-cli/templates/build.rs");
