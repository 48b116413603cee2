//! `bfl-sim`: the BFL simulator as a process of its own (benchmarks, manual testing).

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "bfl-sim", version, about = "A faithful stand-in for Black Forest Labs' FLUX API")]
struct Cli {
    #[command(flatten)]
    args: bfl_sim::cli::SimArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match bfl_sim::cli::run(&cli.args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("bfl-sim: {reason}");
            ExitCode::FAILURE
        }
    }
}
