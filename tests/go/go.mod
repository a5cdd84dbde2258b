module sealgo

go 1.19
