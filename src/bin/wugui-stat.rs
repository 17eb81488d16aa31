fn main() -> std::process::ExitCode {
    wugui::app::stat::main()
}
