//! `meshwork-bench`: runs the benchmark and prints its Markdown report on
//! stdout (progress goes to stderr). `--help` lists the options.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "meshwork-bench",
    version,
    about = "What a pair of Meshwork sidecars costs a gRPC call, side by side with no proxy, nginx and nghttpx"
)]
struct Cli {
    #[command(flatten)]
    args: meshwork_bench::BenchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("meshwork-bench: error: starting the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let markdown = runtime.block_on(async {
        if cli.args.edge {
            return meshwork_bench::run_edge(cli.args).await.map(|r| r.markdown());
        }
        match cli.args.soak {
            Some(_) => meshwork_bench::run_soak(cli.args).await.map(|r| r.markdown()),
            None => meshwork_bench::run(cli.args).await.map(|r| r.markdown()),
        }
    });
    match markdown {
        Ok(markdown) => {
            print!("{markdown}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("meshwork-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
