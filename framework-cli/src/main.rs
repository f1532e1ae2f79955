fn main() -> std::process::ExitCode {
    ovation_cli::main()
}
