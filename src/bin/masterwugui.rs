fn main() -> std::process::ExitCode {
    wugui::app::master::main()
}
