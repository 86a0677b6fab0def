mod routing;
fn main() {}
