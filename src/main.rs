//! The `amps` binary: parse the command line and hand over to [`amps::cmds`].

use amps::cmds::{self, Args, Command};

fn main() {
    let args: Args = argh::from_env();
    if args.version {
        println!("{}", cmds::version_text());
        return;
    }
    let code = match args.command {
        None => {
            eprintln!("amps: a command is required (serve, list, check, probe, health); see `amps --help`");
            2
        }
        Some(Command::Serve(a)) => match cmds::serve::run(a) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("amps: {e:#}");
                1
            }
        },
        Some(Command::List(a)) => cmds::list::run(a),
        Some(Command::Check(a)) => cmds::check::run(a),
        Some(Command::Probe(a)) => cmds::probe::run(a),
        Some(Command::Health(a)) => cmds::health::run(a),
    };
    std::process::exit(code);
}
