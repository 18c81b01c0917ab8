fn main() -> std::process::ExitCode {
    booking_ledger::cli::main()
}
