#!/usr/bin/perl
# sa_hits.pl - ask SpamAssassin (the installed Mail::SpamAssassin, local tests
# only, no DNS) which rules hit each message; used by test_sa_agreement.py.
#
#   perl sa_hits.pl STATE_DIR MSG...
#
# Output, one record a line, tab-separated:
#   rule  TYPE  NAME      every header/body/rawbody/full/uri regex rule SA
#                         runs (non-zero score in the score set in use, which
#                         is set 0: no network, no Bayes); TYPE is SA's name
#   hit   MSG   R1,R2...  the rules that hit MSG: scored rules and __ subrules
#   set   N               the score set SA used
# The configuration is SA's default one (rules from /usr/share/spamassassin,
# site files and plugin loads from /etc/spamassassin) plus the no-network,
# no-learning settings below; STATE_DIR stands in for ~/.spamassassin.
use strict;
use warnings;
use Mail::SpamAssassin;

my $state = shift @ARGV or die "usage: sa_hits.pl STATE_DIR MSG...\n";
my $prefs = "$state/user_prefs";
open(my $pf, '>', $prefs) or die "$prefs: $!\n";
close($pf);

my $sa = Mail::SpamAssassin->new({
	local_tests_only => 1,
	dont_copy_prefs => 1,
	userprefs_filename => $prefs,
	home_dir_for_helpers => $state,
	post_config_text => join("\n",
	    'dns_available no', 'skip_rbl_checks 1', 'use_bayes 0',
	    'bayes_auto_learn 0', 'use_auto_whitelist 0', 'use_txrep 0',
	    'use_razor2 0', 'use_pyzor 0', 'use_dcc 0', ''),
});
# init, not compile_now: compile_now runs a first check, after which the
# Check plugin has dropped the per-type rule tables read below
$sa->init(1);
my $conf = $sa->{conf};

# per type, SA keeps its rules as {priority => {name => test}}
my %want = (head_tests => 'header', body_tests => 'body',
	rawbody_tests => 'rawbody', full_tests => 'full', uri_tests => 'uri');
print "set\t", $conf->get_score_set(), "\n";
for my $key (sort keys %want) {
	my %seen;
	for my $prio (values %{$conf->{$key} || {}}) {
		$seen{$_} = 1 for keys %$prio;
	}
	for my $name (sort keys %seen) {
		print "rule\t$want{$key}\t$name\n" if $conf->{scores}->{$name};
	}
}

for my $path (@ARGV) {
	open(my $fh, '<', $path) or die "$path: $!\n";
	my @lines = <$fh>;
	close($fh);
	my $mail = $sa->parse(\@lines);
	my $pms = $sa->check($mail);
	my %hit;
	for my $n (split /,/, $pms->get_names_of_tests_hit()) { $hit{$n} = 1 if length $n; }
	for my $n (split /,/, $pms->get_names_of_subtests_hit()) { $hit{$n} = 1 if length $n; }
	print "hit\t$path\t", join(',', sort keys %hit), "\n";
	$pms->finish();
	$mail->finish();
}
$sa->finish();
