fn main() {
    std::process::exit(ollamafs::cli::main());
}
