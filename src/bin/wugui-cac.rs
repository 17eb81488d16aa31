fn main() -> std::process::ExitCode {
    wugui::app::cac::main()
}
