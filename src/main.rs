fn main() -> std::process::ExitCode {
    lvn::cli::main()
}
