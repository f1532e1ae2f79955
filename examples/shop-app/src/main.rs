// Linking the library brings in every service's endpoints and databases.
use shop_app as _;

fn main() -> std::process::ExitCode {
    ovation::run()
}
