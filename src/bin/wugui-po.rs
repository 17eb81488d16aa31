fn main() -> std::process::ExitCode {
    wugui::app::po::main()
}
