
# The synthetic test data's last day (a Tuesday): fixed, since the generator's default (the latest
# Tuesday) would hand the tests other data every week.
TEST_END_DATE = "2026-11-24"
