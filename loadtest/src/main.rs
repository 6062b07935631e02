//! `shardcast-load`: the bundled RTMP load generator (publishers and viewers built on
//! shardcast's client role). Not built yet: this binary only says so.

fn main() {
    eprintln!("shardcast-load: the load generator is not implemented yet");
    std::process::exit(2);
}
